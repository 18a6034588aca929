"""Team notifications (issue 16): the support mailbox, a Slack incoming webhook, a signed webhook."""

from activities.notifications.activities import NotificationActivities, configured_sinks

__all__ = ["NotificationActivities", "configured_sinks"]
