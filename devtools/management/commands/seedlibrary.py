"""Fill the database with a large library of conversations for one user, to
measure search (``benchsearch``) and the sidebar on realistic volumes::

    python manage.py seedlibrary --conversations 10000 --messages 20 --user bench

Mixed English, Chinese and Japanese text (a conversation mostly in one
language, with some switching), emoji in some messages, and a few planted
words of known frequency so that searches have varied selectivity:
"quixotry" in about 1 message in 2,000, "人工智能" in about 1 in 50.  The same
``--seed`` makes the same library.  Rows go in with bulk_create in batches
(the search index triggers on SQLite, and the GIN indexes on PostgreSQL,
follow as the rows go in).
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, Message

ENGLISH = (
    "the a of and to in is it that for you with on this be are as was have not but what can at from or "
    "time model data code question answer problem idea system function value error test file user "
    "example result reason change way work help thing part number list page case point fact plan "
    "write read run build make find show explain think know want need try use start keep give look "
    "good new first last long small large simple clear quick better different important possible "
    "python server query index search table column request response thread memory cache token"
).split()
CHINESE = (
    "你好 世界 我们 今天 明天 问题 答案 数据 模型 代码 服务器 数据库 学习 工作 时间 朋友 中国 北京 上海 "
    "电脑 手机 天气 非常 可以 需要 因为 所以 但是 如果 已经 还是 这个 那个 什么 怎么 为什么 一下 一起"
).split()
JAPANESE = (
    "こんにちは ありがとう 東京 大阪 今日 明日 問題 答え データ モデル コード サーバー 勉強 仕事 時間 "
    "友達 天気 とても できます 必要 から ので でも もし もう まだ これ それ 何 どう なぜ 一緒に です ます"
).split()
EMOJI = ["👋🏽", "😀", "🎉", "🚀", "❤️", "👍", "🙏", "🔥", "✨", "🤔", "👨‍👩‍👧", "🇯🇵", "☕"]
RARE = "quixotry"  # about 1 message in 2,000
CJK_PLANT = "人工智能"  # about 1 message in 50
BATCH = 2000


class Command(BaseCommand):
    help = "Create many conversations of mixed-language messages for one user (search benchmarks)."

    def add_arguments(self, parser):
        parser.add_argument("--conversations", type=int, default=10000)
        parser.add_argument("--messages", type=int, default=20, help="per conversation")
        parser.add_argument("--user", default="bench")
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, **options):
        rng = random.Random(options["seed"])
        user, _ = get_user_model().objects.get_or_create(username=options["user"])
        now = timezone.now()
        started = time.perf_counter()
        conversations, messages = [], []
        made = 0
        for number in range(options["conversations"]):
            language = rng.choices(("en", "zh", "ja"), weights=(6, 2, 2))[0]
            at = now - timedelta(minutes=rng.randint(60, 365 * 24 * 60))
            first = _sentence(rng, language, rng.randint(4, 12))
            conv = Conversation(
                id=uuid.uuid4(),
                owner=user,
                title=first[:60],
                title_source=Conversation.TitleSource.FIRST_LINE,
                model_key="demo:demo",
                created_at=at,
                updated_at=at + timedelta(minutes=options["messages"]),
            )
            conversations.append(conv)
            parent = None
            for index in range(options["messages"]):
                role = Message.Role.USER if index % 2 == 0 else Message.Role.ASSISTANT
                words = rng.randint(6, 30) if role == Message.Role.USER else rng.randint(30, 120)
                text = first if index == 0 else _sentence(rng, language, words)
                message = Message(
                    id=uuid.uuid4(),
                    conversation=conv,
                    parent=parent,
                    role=role,
                    content=text,
                    created_at=at + timedelta(minutes=index),
                    provider="demo" if role == Message.Role.ASSISTANT else "",
                    model="demo" if role == Message.Role.ASSISTANT else "",
                )
                messages.append(message)
                parent = message
            if len(messages) >= BATCH or number == options["conversations"] - 1:
                with transaction.atomic():
                    Conversation.objects.bulk_create(conversations)
                    Message.objects.bulk_create(messages, batch_size=500)
                made += len(conversations)
                conversations, messages = [], []
                self.stdout.write(f"\r{made} conversations ({time.perf_counter() - started:.0f} s)", ending="")
                self.stdout.flush()
        seconds = time.perf_counter() - started
        self.stdout.write(f"\nDone: {made} conversations for {user.get_username()} in {seconds:.0f} s.")


def _sentence(rng: random.Random, language: str, words: int) -> str:
    """``words`` words mostly of ``language``, some of another, sometimes an emoji or a planted word."""
    parts = []
    for _ in range(words):
        pick = language if rng.random() < 0.85 else rng.choice(("en", "zh", "ja"))
        pool = {"en": ENGLISH, "zh": CHINESE, "ja": JAPANESE}[pick]
        parts.append(rng.choice(pool))
        if rng.random() < 0.01:
            parts.append(rng.choice(EMOJI))
    if rng.random() < 1 / 2000:
        parts.insert(rng.randrange(len(parts) + 1), RARE)
    if rng.random() < 1 / 50:
        parts.insert(rng.randrange(len(parts) + 1), CJK_PLANT)
    if language == "en":
        return " ".join(parts).capitalize() + "."
    # Chinese and Japanese are written without spaces between words (an English word keeps its own).
    text = "".join(p if p not in ENGLISH and p != RARE else f" {p} " for p in parts)
    return " ".join(text.split()) + ("。" if rng.random() < 0.8 else "!")
