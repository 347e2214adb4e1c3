"""``manage.py purgeuploads``: delete attachments uploaded but never sent, once a day old."""

from django.core.management.base import BaseCommand

from conversations.models import Attachment


class Command(BaseCommand):
    help = "Delete uploads never sent with a message, older than a day, with their files (for cron or a timer)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Say how many would go; delete nothing.")

    def handle(self, *args, **options):
        stale = Attachment.objects.stale()
        count = stale.count()
        if options["dry_run"]:
            self.stdout.write(f"{count} upload(s) never sent would be deleted.")
            return
        stale.delete()  # each row's file goes as the deletion commits (a post_delete receiver)
        self.stdout.write(f"Deleted {count} upload(s) never sent.")
