"""``manage.py purgeconversations``: delete conversations idle for CHAT_RETENTION_DAYS."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from conversations.models import Conversation


class Command(BaseCommand):
    help = "Delete conversations with no activity for CHAT_RETENTION_DAYS days (for cron or a systemd timer)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, default=None, help="Override CHAT_RETENTION_DAYS for this run.")
        parser.add_argument("--dry-run", action="store_true", help="Say how many would go; delete nothing.")

    def handle(self, *args, **options):
        days = options["days"] if options["days"] is not None else settings.CHAT_RETENTION_DAYS
        if not days:
            self.stdout.write("CHAT_RETENTION_DAYS is 0: every conversation is kept.")
            return
        if days < 0:
            raise CommandError("The retention must be a positive number of days.")
        idle = Conversation.objects.idle_for(days)
        count = idle.count()
        if options["dry_run"]:
            self.stdout.write(f"{count} conversation(s) idle for over {days:g} days would be deleted.")
            return
        idle.delete()  # their messages, feedback and review notes go with them (on_delete=CASCADE)
        self.stdout.write(f"Deleted {count} conversation(s) idle for over {days:g} days.")
