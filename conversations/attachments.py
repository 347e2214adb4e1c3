"""Accepting an uploaded file as an attachment, and serving one back.

``accept(upload, name=...)`` reads at most CHAT_MAX_UPLOAD_MB (and one byte
more, to tell an oversized file), decides what the file is from its bytes and
never from its name, and returns a ``Prepared`` file to store
(``Attachment.store``), or raises ``AttachmentRefused`` with a message for the
user; nothing is stored then.

- Images (PNG, JPEG, GIF, WebP by their magic numbers) are decoded with
  Pillow, bounded in pixels (CHAT_MAX_IMAGE_PIXELS, checked from the header
  before anything is decoded), loaded whole (a truncated one is refused),
  turned upright, shrunk to CHAT_MAX_IMAGE_SIDE and re-encoded without their
  metadata (EXIF, GPS location included): what is stored is our encoding,
  never the uploaded bytes.  PNG and GIF (its first frame) become PNG, JPEG
  stays JPEG, WebP stays WebP.
- PDFs (``%PDF-``) are parsed with pypdf and their text extracted; one with
  no text (scanned pages) is kept with ``no_text`` set.
- Anything else that is UTF-8 without NUL bytes is a text document (plain
  text, Markdown, CSV, source code; SVG and HTML too, as their source: they
  are never images and never served inline).
- A name whose extension claims another kind than the content's (a PDF
  called ``photo.png``) is refused: the user meant another file, or someone
  is trying something.

``file_response(attachment)`` serves a stored file: a download
(``Content-Disposition: attachment``) for everything but our re-encoded
raster images, always with ``nosniff``, a sandboxing CSP and a private cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.http import FileResponse
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

IMAGE = "image"
PDF = "pdf"
TEXT = "text"

MB = 1024 * 1024
NAME_CHARS = 200
# Served inline (an <img> may show them): only what we encoded ourselves.
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp")
FILE_CSP = "default-src 'none'; sandbox"

# Magic numbers: (prefix, Pillow format); WebP is RIFF....WEBP.
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
# What each format is re-encoded as: (Pillow format, content type, extension).
_OUTPUT = {
    "PNG": ("PNG", "image/png", "png"),
    "GIF": ("PNG", "image/png", "png"),
    "JPEG": ("JPEG", "image/jpeg", "jpg"),
    "WEBP": ("WEBP", "image/webp", "webp"),
}
# Extensions that name a kind: a file whose content is another kind is refused.
_EXTENSION_KINDS = {
    **dict.fromkeys(("png", "jpg", "jpeg", "jpe", "jfif", "gif", "webp"), IMAGE),
    "pdf": PDF,
    **dict.fromkeys(
        ("txt", "text", "md", "markdown", "csv", "tsv", "json", "py", "js", "ts", "html", "htm", "svg", "xml"),
        TEXT,
    ),
}
# Text documents keep a type that says what they are when downloaded; any
# other text (SVG and HTML included) is text/plain.
_TEXT_TYPES = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "md": "text/markdown",
    "markdown": "text/markdown",
}
_KIND_NAMES = {IMAGE: gettext_noop("an image"), PDF: gettext_noop("a PDF"), TEXT: gettext_noop("a text file")}


class AttachmentRefused(Exception):
    """A file not accepted; ``message`` says why, for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Prepared:
    """A file accepted and ready to store: the bytes to keep (re-encoded for
    an image), what they are, and a document's text."""

    kind: str
    content: bytes
    content_type: str
    name: str
    width: int | None = None
    height: int | None = None
    text: str = ""
    no_text: bool = False

    @property
    def size(self) -> int:
        return len(self.content)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def accept(upload, *, name: str) -> Prepared:
    """``upload`` (a file object: Django's UploadedFile, or any with ``read``)
    as a ``Prepared`` attachment named ``name`` (sanitised here); raises
    ``AttachmentRefused``."""
    limit = int(settings.CHAT_MAX_UPLOAD_MB * MB)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise AttachmentRefused(
            _("“%(name)s” is larger than %(mb)s MB, the most a file may be.")
            % {"name": clean_name(name), "mb": _mb(settings.CHAT_MAX_UPLOAD_MB)}
        )
    name = clean_name(name)
    if not data:
        raise AttachmentRefused(_("“%(name)s” is empty.") % {"name": name})
    kind, image_format = _sniff(data)
    if kind is None:
        raise AttachmentRefused(
            _("“%(name)s” is not a file that can be attached: images (PNG, JPEG, GIF, WebP), PDFs and text files can.")
            % {"name": name}
        )
    claimed = _EXTENSION_KINDS.get(_extension(name))
    if claimed is not None and claimed != kind:
        raise AttachmentRefused(
            _("“%(name)s” is named as %(claimed)s but its content is %(actual)s; nothing was attached.")
            % {"name": name, "claimed": _(_KIND_NAMES[claimed]), "actual": _(_KIND_NAMES[kind])}
        )
    if kind == IMAGE:
        return _image(data, image_format, name)
    if kind == PDF:
        return _pdf(data, name)
    return _text(data, name)


def clean_name(name: str) -> str:
    """The name to show and to offer on download: its last path part only,
    without control or format characters, in NFC, at most NAME_CHARS long
    (its extension kept); any script is kept as it is."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if unicodedata.category(c)[0] not in ("C", "Z") or c == " " else " " for c in name)
    name = " ".join(name.split()).lstrip(".").strip()
    if len(name) > NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: NAME_CHARS - len(ext) - 1].rstrip() + "." + ext
        else:
            name = name[:NAME_CHARS].rstrip()
    return name or "attachment"


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def _mb(value: float) -> str:
    return f"{value:g}"


def _sniff(data: bytes) -> tuple[str | None, str]:
    """(kind, Pillow format) from the first bytes; (None, "") for what is none of ours."""
    for magic, image_format in _IMAGE_MAGIC:
        if data.startswith(magic):
            return IMAGE, image_format
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return IMAGE, "WEBP"
    if data.startswith(b"%PDF-"):
        return PDF, ""
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None, ""
        return TEXT, ""
    return None, ""


def _image(data: bytes, image_format: str, name: str) -> Prepared:
    from PIL import Image, ImageOps

    most = settings.CHAT_MAX_IMAGE_PIXELS
    refused_bomb = AttachmentRefused(
        _("“%(name)s” has more pixels than the %(pixels)s allowed; nothing was attached.")
        % {"name": name, "pixels": f"{most:,}"}
    )
    unreadable = AttachmentRefused(
        _("“%(name)s” could not be read as an image (it may be damaged or cut short); nothing was attached.")
        % {"name": name}
    )
    try:
        # Opening reads the header only: the size is checked before any pixel
        # is decoded.  (Pillow's own guard, a backstop, refuses twice its
        # MAX_IMAGE_PIXELS, about 179 million, whatever is set here.)
        image = Image.open(io.BytesIO(data), formats=[image_format])
        width, height = image.size
        if width * height > most:
            raise refused_bomb
        image.seek(0)  # an animation's first frame
        image.load()  # decodes everything: a truncated file fails here
        image = ImageOps.exif_transpose(image)
        side = settings.CHAT_MAX_IMAGE_SIDE
        if max(image.size) > side:
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
        out_format, content_type, extension = _OUTPUT[image_format]
        image = _encodable(image, out_format)
        buffer = io.BytesIO()
        options = {"quality": 85, "optimize": True} if out_format in ("JPEG", "WEBP") else {"optimize": True}
        # A fresh encoding with no metadata: no EXIF (GPS), no comments, no text chunks.
        image.info = {k: v for k, v in image.info.items() if k == "transparency"}
        image.save(buffer, out_format, exif=b"", **options)
    except AttachmentRefused:
        raise
    except Image.DecompressionBombError:
        raise refused_bomb from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, Image.UnidentifiedImageError):
        raise unreadable from None
    stem = name.rpartition(".")[0] if _extension(name) else name
    return Prepared(
        kind=IMAGE,
        content=buffer.getvalue(),
        content_type=content_type,
        name=f"{stem}.{extension}",
        width=image.width,
        height=image.height,
    )


def _encodable(image, out_format: str):
    """``image`` in a mode ``out_format`` can write."""
    if out_format == "JPEG":
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if out_format == "WEBP":
        return image if image.mode in ("RGB", "RGBA") else image.convert("RGBA")
    return image if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA") else image.convert("RGBA")


def _pdf(data: bytes, name: str) -> Prepared:
    from pypdf import PdfReader

    unreadable = AttachmentRefused(
        _("“%(name)s” could not be read as a PDF (it may be damaged); nothing was attached.") % {"name": name}
    )
    most_pages, most_chars = settings.CHAT_MAX_DOCUMENT_PAGES, settings.CHAT_MAX_DOCUMENT_CHARS
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise AttachmentRefused(_("“%(name)s” is protected by a password; nothing was attached.") % {"name": name})
        pages = len(reader.pages)
        if not pages:
            raise unreadable
        if pages > most_pages:
            raise AttachmentRefused(
                _("“%(name)s” has %(pages)d pages; at most %(most)d are read.")
                % {"name": name, "pages": pages, "most": most_pages}
            )
        texts, chars = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            chars += len(text)
            if chars > most_chars:
                raise _too_long(name)
            texts.append(text)
    except AttachmentRefused:
        raise
    except Exception:
        # pypdf raises many kinds of errors for a malformed file (its own,
        # and ValueError, KeyError, TypeError, RecursionError...): any is a damaged PDF.
        raise unreadable from None
    text = "\n\n".join(t.strip() for t in texts if t.strip())
    return Prepared(kind=PDF, content=data, content_type="application/pdf", name=name, text=text, no_text=not text)


def _too_long(name: str) -> AttachmentRefused:
    return AttachmentRefused(
        _("The text of “%(name)s” is longer than %(chars)s characters, the most a document may have.")
        % {"name": name, "chars": f"{settings.CHAT_MAX_DOCUMENT_CHARS:,}"}
    )


def _text(data: bytes, name: str) -> Prepared:
    text = data.decode("utf-8-sig")
    if len(text) > settings.CHAT_MAX_DOCUMENT_CHARS:
        raise _too_long(name)
    content_type = _TEXT_TYPES.get(_extension(name), "text/plain")
    return Prepared(
        kind=TEXT,
        content=data,
        content_type=f"{content_type}; charset=utf-8",
        name=name,
        text=text,
        no_text=not text.strip(),
    )


# --- storage and serving ---------------------------------------------------------


class PrivateStorage(FileSystemStorage):
    """The default attachment storage: files under CHAT_UPLOAD_ROOT (read when
    used, so a test may point it elsewhere), and no URL at all: every file is
    served by a view that checks who asks."""

    def __init__(self, location=None, **kwargs) -> None:
        super().__init__(location=location, base_url=None, **kwargs)

    @property
    def base_location(self):
        return self._value_or_setting(self._location, settings.CHAT_UPLOAD_ROOT)

    @property
    def location(self):
        return os.path.abspath(self.base_location)

    def url(self, name):
        raise ValueError("attachments have no public URL: they are served by conversations.views.attachment_file")


def file_response(attachment) -> FileResponse:
    """The stored file of ``attachment`` as a response (the caller checked who may have it)."""
    inline = attachment.kind == IMAGE and attachment.content_type in INLINE_TYPES
    # Text documents were stored as text/plain, text/csv, text/markdown or
    # text/tab-separated-values (SVG and HTML as text/plain), all downloads.
    response = FileResponse(
        attachment.file.open("rb"),
        content_type=attachment.content_type,
        as_attachment=not inline,
        filename=attachment.name,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = FILE_CSP
    # A file's bytes never change under its id; only this browser may keep them.
    patch_cache_control(response, private=True, max_age=3600)
    return response
