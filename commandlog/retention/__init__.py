"""Retention: the policy and legal holds, the purge of Postgres and the lake."""

from commandlog.retention.policy import (
    SYSTEM_TENANT, SYSTEM_ACTOR, Days, RetentionError, TenantOverride, RetentionPolicy, PurgeCount, Purge, AddLegalHold, RemoveLegalHold, NoSuchHoldError, handle_purge, handle_add_hold, handle_remove_hold, setup, add_hold, remove_hold, list_holds, now,
)

__all__ = [
    "SYSTEM_TENANT", "SYSTEM_ACTOR", "Days", "RetentionError", "TenantOverride", "RetentionPolicy", "PurgeCount",
    "Purge", "AddLegalHold", "RemoveLegalHold", "NoSuchHoldError", "handle_purge", "handle_add_hold",
    "handle_remove_hold", "setup", "add_hold", "remove_hold", "list_holds", "now",
]
