"""Attachments: what is accepted and how (conversations.attachments), the
limits, who may open a file, and that files go when their rows do.

Every file is made here: images with Pillow, PDFs written by hand.  alice
owns, charlie has no access, rita reviews (staff with the review permission),
sam is staff without it."""

import io
import struct
import zlib

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from conversations import export
from conversations.attachments import AttachmentRefused, Prepared, accept, clean_name
from conversations.models import Attachment, AuditLog, Conversation, Message

pytestmark = pytest.mark.django_db

UPLOAD = reverse("upload_attachments")
GPS_IFD = 0x8825


@pytest.fixture(autouse=True)
def _private_root(settings, tmp_path):
    settings.CHAT_UPLOAD_ROOT = tmp_path


def _stored_files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


# --- files made for the tests ---------------------------------------------------


def png_with_gps() -> bytes:
    image = Image.new("RGB", (640, 480), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[GPS_IFD] = {1: "N", 2: (51.0, 30.0, 12.5), 3: "W", 4: (0.0, 7.0, 39.0)}
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    return buffer.getvalue()


def jpeg(size=(320, 200)) -> bytes:
    image = Image.effect_noise(size, 64).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (40, 40), i) for i in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A PNG whose header declares width × height pixels (of one bit), with
    a few bytes of data: decoding it would take gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def pdf(content: bytes) -> bytes:
    """A one-page PDF drawing ``content`` (a content stream), with a correct xref table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


PDF_WITH_TEXT = pdf(b"BT /F1 12 Tf 20 100 Td (Hello PDF) Tj ET")
PDF_WITHOUT_TEXT = pdf(b"0 0 1 rg 20 20 200 100 re f")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'


def _upload(data: bytes, name: str):
    return SimpleUploadedFile(name, data)


def _accept(data: bytes, name: str) -> Prepared:
    return accept(io.BytesIO(data), name=name)


# --- what accept() makes of a file ---------------------------------------------


def test_it_reencodes_a_png_without_its_exif_and_gps_location():
    original = Image.open(io.BytesIO(png_with_gps()))
    assert original.getexif().get_ifd(GPS_IFD)  # the test file does carry a location

    prepared = _accept(png_with_gps(), "holiday.png")

    assert (prepared.kind, prepared.content_type, prepared.name) == ("image", "image/png", "holiday.png")
    assert (prepared.width, prepared.height) == (640, 480)
    stored = Image.open(io.BytesIO(prepared.content))
    assert stored.format == "PNG"
    assert not stored.getexif().get_ifd(GPS_IFD)
    assert not stored.getexif()
    assert b"eXIf" not in prepared.content and b"Camera maker" not in prepared.content


def test_it_reencodes_a_jpeg_as_a_jpeg():
    prepared = _accept(jpeg(), "photo.jpeg")
    assert (prepared.kind, prepared.content_type, prepared.name) == ("image", "image/jpeg", "photo.jpg")
    assert Image.open(io.BytesIO(prepared.content)).format == "JPEG"


def test_it_keeps_a_webp_as_a_webp():
    buffer = io.BytesIO()
    Image.new("RGBA", (30, 20), (0, 128, 0, 200)).save(buffer, "WEBP")
    prepared = _accept(buffer.getvalue(), "leaf.webp")
    assert (prepared.content_type, prepared.name, prepared.width) == ("image/webp", "leaf.webp", 30)


def test_it_shrinks_an_image_to_the_longest_side_allowed(settings):
    settings.CHAT_MAX_IMAGE_SIDE = 100
    prepared = _accept(jpeg((400, 200)), "wide.jpg")
    assert (prepared.width, prepared.height) == (100, 50)


def test_it_keeps_the_first_frame_of_an_animated_gif_as_a_png():
    prepared = _accept(animated_gif(), "spinner.gif")
    assert (prepared.content_type, prepared.name) == ("image/png", "spinner.png")
    assert getattr(Image.open(io.BytesIO(prepared.content)), "n_frames", 1) == 1


def test_it_refuses_a_decompression_bomb():
    with pytest.raises(AttachmentRefused, match="more pixels"):
        _accept(png_bomb(), "small.png")


def test_it_refuses_an_image_over_the_pixel_limit_before_decoding_it(settings):
    settings.CHAT_MAX_IMAGE_PIXELS = 10_000
    with pytest.raises(AttachmentRefused, match="more pixels"):
        _accept(png_bomb(200, 200), "big.png")


def test_it_refuses_a_truncated_jpeg():
    whole = jpeg()
    with pytest.raises(AttachmentRefused, match="could not be read as an image"):
        _accept(whole[: len(whole) // 2], "cut.jpg")


def test_it_extracts_the_text_of_a_pdf():
    prepared = _accept(PDF_WITH_TEXT, "report.pdf")
    assert (prepared.kind, prepared.content_type) == ("pdf", "application/pdf")
    assert "Hello PDF" in prepared.text
    assert not prepared.no_text
    assert prepared.content == PDF_WITH_TEXT


def test_it_says_no_text_was_found_in_an_image_only_pdf():
    prepared = _accept(PDF_WITHOUT_TEXT, "scan.pdf")
    assert prepared.kind == "pdf"
    assert prepared.no_text and prepared.text == ""


@pytest.mark.parametrize(
    "data", [b"%PDF-1.4\nthis is no PDF at all", PDF_WITH_TEXT[:60], PDF_WITH_TEXT.replace(b"/Pages 2", b"/Pages 9")]
)
def test_it_refuses_a_pdf_that_fails_to_parse(data):
    with pytest.raises(AttachmentRefused, match="could not be read as a PDF"):
        _accept(data, "broken.pdf")


def test_it_reads_a_csv_as_a_text_document():
    prepared = _accept("name,city\nAlice,Zürich\n".encode(), "people.csv")
    assert (prepared.kind, prepared.content_type) == ("text", "text/csv; charset=utf-8")
    assert prepared.text == "name,city\nAlice,Zürich\n"


def test_it_reads_utf8_text_with_cjk_and_emoji_and_drops_the_bom():
    prepared = _accept("\ufeff你好，世界 👋\n".encode(), "笔记.md")
    assert (prepared.kind, prepared.name, prepared.text) == ("text", "笔记.md", "你好，世界 👋\n")
    assert prepared.content_type == "text/markdown; charset=utf-8"


def test_it_takes_svg_as_a_text_document_never_an_image():
    prepared = _accept(SVG, "logo.svg")
    assert (prepared.kind, prepared.content_type) == ("text", "text/plain; charset=utf-8")
    assert "<script>" in prepared.text


@pytest.mark.parametrize("data", [b"\x00\x01\x02binary", "café".encode("latin-1"), "hi".encode("utf-16")])
def test_it_refuses_binary_files(data):
    with pytest.raises(AttachmentRefused, match="not a file that can be attached"):
        _accept(data, "blob")


@pytest.mark.parametrize(
    ("data", "name", "claimed"),
    [
        (PDF_WITH_TEXT, "photo.png", "an image"),
        (png_with_gps(), "notes.txt", "a text file"),
        (b"just text", "report.pdf", "a PDF"),
        (jpeg(), "invoice.pdf", "a PDF"),
    ],
)
def test_it_refuses_a_name_that_lies_about_the_content(data, name, claimed):
    with pytest.raises(AttachmentRefused, match=f"named as {claimed}"):
        _accept(data, name)


def test_it_refuses_a_file_over_the_size_limit_after_reading_one_byte_more(settings):
    settings.CHAT_MAX_UPLOAD_MB = 1 / 1024  # 1024 bytes
    source = io.BytesIO(b"a" * 5000)
    with pytest.raises(AttachmentRefused, match="larger than"):
        accept(source, name="big.txt")
    assert source.tell() == 1025


def test_it_refuses_an_empty_file():
    with pytest.raises(AttachmentRefused, match="empty"):
        _accept(b"", "nothing.txt")


def test_it_cleans_the_name_but_keeps_its_script():
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\me\\報告\x07書.txt") == "報告 書.txt"
    assert clean_name("\u202egnp.txt") == "gnp.txt"
    assert clean_name("...") == "attachment"
    assert len(clean_name("x" * 300 + ".pdf")) == 200 and clean_name("x" * 300 + ".pdf").endswith(".pdf")


# --- uploading -------------------------------------------------------------------


def test_it_stores_an_upload_under_a_random_name_in_the_private_root(alice_client, alice, tmp_path):
    response = alice_client.post(UPLOAD, {"file": [_upload(png_with_gps(), "holiday.png")]})

    assert response.status_code == 201
    attachment = Attachment.objects.get()
    assert (attachment.owner, attachment.message, attachment.kind, attachment.name) == (
        alice,
        None,
        "image",
        "holiday.png",
    )
    assert attachment.get_absolute_url() in response.content.decode()
    assert "holiday.png" in response.content.decode()
    [path] = _stored_files(tmp_path)
    assert "holiday" not in str(path) and path.parent.name == "attachments"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and attachment.size == path.stat().st_size


def test_it_stores_several_files_of_one_upload(alice_client):
    files = [_upload(PDF_WITH_TEXT, "a.pdf"), _upload(b"hello", "b.txt")]
    response = alice_client.post(UPLOAD, {"file": files})
    assert response.status_code == 201
    assert sorted(Attachment.objects.values_list("name", flat=True)) == ["a.pdf", "b.txt"]


def test_it_says_no_text_was_found_on_the_chip_of_an_image_only_pdf(alice_client):
    response = alice_client.post(UPLOAD, {"file": [_upload(PDF_WITHOUT_TEXT, "scan.pdf")]})
    assert response.status_code == 201
    assert "No text was found in this PDF" in response.content.decode()
    assert Attachment.objects.get().no_text


@pytest.mark.parametrize(
    ("data", "name"),
    [(png_bomb(), "bomb.png"), (jpeg()[:500], "cut.jpg"), (b"%PDF-1.4 nope", "x.pdf"), (PDF_WITH_TEXT, "photo.png")],
)
def test_a_refused_upload_stores_nothing_and_says_why(alice_client, tmp_path, data, name):
    response = alice_client.post(UPLOAD, {"file": [_upload(data, name)]})
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode() and name in response.content.decode()
    assert not Attachment.objects.exists()
    assert _stored_files(tmp_path) == []


def test_a_refusal_reaches_htmx_as_a_200_fragment(alice_client):
    response = alice_client.post(UPLOAD, {"file": [_upload(b"\x00", "x.bin")]}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "not a file that can be attached" in response.content.decode()


def test_it_refuses_an_upload_with_no_file(alice_client):
    assert alice_client.post(UPLOAD, {}).status_code == 400


def test_it_needs_a_login_to_upload(client):
    response = client.post(UPLOAD, {"file": [_upload(b"hello", "a.txt")]})
    assert response.status_code == 302 and reverse("login") in response["Location"]
    assert not Attachment.objects.exists()


# --- limits -----------------------------------------------------------------------


def test_it_refuses_a_file_over_the_per_file_limit(alice_client, settings, tmp_path):
    settings.CHAT_MAX_UPLOAD_MB = 1 / 1024
    response = alice_client.post(UPLOAD, {"file": [_upload(b"a" * 2000, "big.txt")]})
    assert response.status_code == 400
    assert "is larger than" in response.content.decode()
    assert not Attachment.objects.exists() and _stored_files(tmp_path) == []


def test_it_refuses_more_files_than_a_message_carries(alice_client, settings):
    settings.CHAT_MAX_UPLOADS_PER_MESSAGE = 2
    for name in ("1.txt", "2.txt"):
        assert alice_client.post(UPLOAD, {"file": [_upload(b"x", name)]}).status_code == 201
    response = alice_client.post(UPLOAD, {"file": [_upload(b"x", "3.txt")]})
    assert response.status_code == 400
    assert "A message can carry 2 files" in response.content.decode()
    assert Attachment.objects.count() == 2


def test_it_refuses_more_files_in_one_request_than_a_message_carries(alice_client, settings):
    settings.CHAT_MAX_UPLOADS_PER_MESSAGE = 2
    files = [_upload(b"x", f"{n}.txt") for n in range(3)]
    assert alice_client.post(UPLOAD, {"file": files}).status_code == 400
    assert not Attachment.objects.exists()


def test_it_refuses_files_over_the_per_message_total(alice_client, settings):
    settings.CHAT_MAX_MESSAGE_UPLOAD_MB = 3 / 1024  # 3072 bytes
    assert alice_client.post(UPLOAD, {"file": [_upload(b"a" * 2000, "1.txt")]}).status_code == 201
    response = alice_client.post(UPLOAD, {"file": [_upload(b"b" * 2000, "2.txt")]})
    assert response.status_code == 400
    assert "The files of one message may be" in response.content.decode()


def test_files_sent_with_a_message_no_longer_count_towards_the_next_message(alice, reply, settings):
    settings.CHAT_MAX_UPLOADS_PER_MESSAGE = 1
    first = Attachment.store(alice, _accept(b"one", "1.txt"))
    first.message = reply.parent
    first.save()
    assert Attachment.store(alice, _accept(b"two", "2.txt")).is_pending


def test_it_refuses_files_over_the_per_user_total(alice, reply, settings):
    settings.CHAT_MAX_USER_UPLOAD_MB = 3 / 1024
    sent = Attachment.store(alice, _accept(b"a" * 2000, "1.txt"))
    Attachment.objects.filter(pk=sent.pk).update(message=reply.parent)
    with pytest.raises(AttachmentRefused, match="Your files here may be"):
        Attachment.store(alice, _accept(b"b" * 2000, "2.txt"))
    assert Attachment.objects.count() == 1


def test_the_per_user_limit_is_the_users_own(alice, charlie, settings):
    settings.CHAT_MAX_USER_UPLOAD_MB = 3 / 1024
    Attachment.store(alice, _accept(b"a" * 2000, "1.txt"))
    assert Attachment.store(charlie, _accept(b"b" * 2000, "2.txt")).owner == charlie


# --- serving ----------------------------------------------------------------------


@pytest.fixture
def stored(alice):
    def store(data: bytes, name: str) -> Attachment:
        return Attachment.store(alice, _accept(data, name))

    return store


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def _assert_safe_headers(response):
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert "private" in response["Cache-Control"] and "public" not in response["Cache-Control"]


def test_it_serves_a_reencoded_image_inline_to_its_owner(alice_client, stored):
    image = stored(png_with_gps(), "holiday.png")
    response = alice_client.get(image.get_absolute_url())
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline")
    _assert_safe_headers(response)
    assert _body(response) == image.file.open("rb").read()


def test_it_serves_a_pdf_as_a_download(alice_client, stored):
    response = alice_client.get(stored(PDF_WITH_TEXT, "report.pdf").get_absolute_url())
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="report.pdf"'
    _assert_safe_headers(response)
    assert _body(response) == PDF_WITH_TEXT


def test_it_serves_svg_as_a_plain_text_download_never_an_inline_image(alice_client, stored):
    response = alice_client.get(stored(SVG, "logo.svg").get_absolute_url())
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment")
    _assert_safe_headers(response)


def test_it_names_a_download_in_any_script(alice_client, stored):
    response = alice_client.get(stored("数据".encode(), "数据.csv").get_absolute_url())
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''%E6%95%B0%E6%8D%AE.csv"


def test_another_users_file_is_a_404(charlie_client, stored):
    attachment = stored(b"alice's notes", "notes.txt")
    assert charlie_client.get(attachment.get_absolute_url()).status_code == 404
    assert charlie_client.post(reverse("delete_attachment", args=[attachment.pk])).status_code == 404
    assert Attachment.objects.filter(pk=attachment.pk).exists()


def test_an_anonymous_visitor_is_sent_to_log_in(client, stored):
    response = client.get(stored(b"notes", "notes.txt").get_absolute_url())
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_a_missing_file_is_a_404(alice_client):
    assert (
        alice_client.get(reverse("attachment_file", args=["6f1c0c1e-0000-4000-8000-000000000000"])).status_code == 404
    )


def test_storage_has_no_public_url(stored):
    attachment = stored(b"notes", "notes.txt")
    with pytest.raises(ValueError, match="no public URL"):
        assert not attachment.file.url


# --- deleting ---------------------------------------------------------------------


def test_the_owner_removes_a_pending_upload_and_its_file(
    alice_client, stored, tmp_path, django_capture_on_commit_callbacks
):
    attachment = stored(b"notes", "notes.txt")
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("delete_attachment", args=[attachment.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 200 and response.content == b""
    assert not Attachment.objects.exists()
    assert _stored_files(tmp_path) == []


def test_a_sent_attachment_is_not_removed_on_its_own(alice_client, stored, reply):
    attachment = stored(b"notes", "notes.txt")
    Attachment.objects.filter(pk=attachment.pk).update(message=reply.parent)
    assert alice_client.post(reverse("delete_attachment", args=[attachment.pk])).status_code == 404


def test_deleting_a_conversation_deletes_its_files(
    alice_client, stored, reply, conversation, tmp_path, django_capture_on_commit_callbacks
):
    for data, name in ((png_with_gps(), "a.png"), (PDF_WITH_TEXT, "b.pdf")):
        Attachment.objects.filter(pk=stored(data, name).pk).update(message=reply.parent)
    assert len(_stored_files(tmp_path)) == 2

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("delete", args=[conversation.pk]))

    assert response.status_code == 302
    assert not Conversation.objects.exists() and not Attachment.objects.exists()
    assert _stored_files(tmp_path) == []


def test_deleting_an_account_deletes_its_files(alice, stored, reply, tmp_path, django_capture_on_commit_callbacks):
    Attachment.objects.filter(pk=stored(b"sent", "sent.txt").pk).update(message=reply.parent)
    stored(b"pending", "pending.txt")
    with django_capture_on_commit_callbacks(execute=True):
        alice.delete()
    assert not Attachment.objects.exists()
    assert _stored_files(tmp_path) == []


def test_a_deletion_rolled_back_keeps_the_file(stored, tmp_path, django_capture_on_commit_callbacks):
    from django.db import transaction

    attachment = stored(b"notes", "notes.txt")
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                attachment.delete()
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert len(_stored_files(tmp_path)) == 1


def test_stale_uploads_are_pending_ones_older_than_a_day(alice, stored, reply):
    old, recent, sent = (stored(b"x", f"{n}.txt") for n in range(3))
    a_while_ago = timezone.now() - timezone.timedelta(days=2)
    Attachment.objects.filter(pk__in=[old.pk, sent.pk]).update(created_at=a_while_ago)
    Attachment.objects.filter(pk=sent.pk).update(message=reply.parent)
    assert list(Attachment.objects.stale()) == [old]
    assert set(Attachment.objects.pending_for(alice)) == {old, recent}


# --- export -----------------------------------------------------------------------


def test_the_export_names_a_messages_attachments_without_their_bytes(stored, reply, conversation):
    attachment = stored(PDF_WITH_TEXT, "report.pdf")
    Attachment.objects.filter(pk=attachment.pk).update(message=reply.parent)
    document = export.conversation_document(export.for_owner(Conversation.objects.filter(pk=conversation.pk)).get())
    question = next(m for m in document["messages"] if m["id"] == str(reply.parent_id))
    assert question["attachments"] == [
        {
            "name": "report.pdf",
            "kind": "pdf",
            "content_type": "application/pdf",
            "size": len(PDF_WITH_TEXT),
            "sha256": attachment.sha256,
        }
    ]
    assert next(m for m in document["messages"] if m["id"] == str(reply.pk))["attachments"] == []


# --- admin review -----------------------------------------------------------------


def _staff(django_user_model, name: str, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(name, password=f"{name}-password-123", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="conversations", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def sent(stored, reply) -> Attachment:
    attachment = stored(PDF_WITH_TEXT, "diagnosis.pdf")
    Attachment.objects.filter(pk=attachment.pk).update(message=reply.parent)
    attachment.refresh_from_db()
    return attachment


def _admin_url(attachment: Attachment, conversation_id=None) -> str:
    conversation_id = conversation_id or attachment.message.conversation_id
    return reverse("admin:conversations_conversation_attachment", args=[conversation_id, attachment.pk])


def test_a_reviewer_sees_the_attachments_on_the_review_page(django_user_model, sent, conversation):
    rita = _staff(django_user_model, "rita", "view_conversation", "review_conversation")
    body = rita.get(reverse("admin:conversations_conversation_review", args=[conversation.pk])).content.decode()
    assert "diagnosis.pdf" in body and _admin_url(sent) in body


def test_a_reviewer_opening_an_attachment_is_in_the_audit_log(django_user_model, sent, conversation):
    rita = _staff(django_user_model, "rita", "view_conversation", "review_conversation")
    response = rita.get(_admin_url(sent))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    _assert_safe_headers(response)
    entry = AuditLog.objects.get(details__page="attachment")
    assert (entry.actor_username, entry.action, entry.conversation_ids) == ("rita", "view", [str(conversation.pk)])
    assert entry.details["attachment"] == str(sent.pk)


def test_staff_without_the_review_permission_see_no_attachment(django_user_model, sent, conversation):
    sam = _staff(django_user_model, "sam", "view_conversation")
    assert sam.get(_admin_url(sent)).status_code == 403
    change = sam.get(reverse("admin:conversations_conversation_change", args=[conversation.pk])).content.decode()
    assert "diagnosis.pdf" not in change
    assert not AuditLog.objects.filter(details__page="attachment").exists()


def test_a_reviewer_cannot_open_an_attachment_through_another_conversation(django_user_model, sent, alice):
    rita = _staff(django_user_model, "rita", "view_conversation", "review_conversation")
    other = Conversation.objects.create(owner=alice, title="other")
    Message.objects.create(conversation=other, role="user", content="hi")
    assert rita.get(_admin_url(sent, other.pk)).status_code == 404


def test_purgeuploads_deletes_stale_uploads_and_their_files(stored, tmp_path, django_capture_on_commit_callbacks):
    from django.core.management import call_command

    old, recent = stored(b"old", "old.txt"), stored(b"new", "new.txt")
    Attachment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(days=2))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("purgeuploads", stdout=io.StringIO())
    assert list(Attachment.objects.all()) == [recent]
    assert len(_stored_files(tmp_path)) == 1
