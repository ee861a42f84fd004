"""Prefect tasks of the draft-approval flow: thin wrappers over ``commandlog.drafts.service`` /
``commandlog.drafts.review``.

Safe to retry: projecting again only replaces the stored projection; a decision applied twice finds the draft
already decided and reports it (``already_executed`` / ``closed``) instead of acting twice.
"""

from __future__ import annotations

import uuid

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Failed

from commandlog.bootstrap import runtime
from commandlog.drafts.review import FINAL, apply_decision, review_markdown
from commandlog.drafts.service import DraftService


def _drafts() -> DraftService:
    _, bus = runtime()
    return DraftService(bus)


@task(name="project-draft", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def project_draft(draft_uuid: uuid.UUID, note: str | None = None) -> dict:
    """Project the draft, publish the review page as a markdown artifact; returns what the reviewer sees."""
    drafts = _drafts()
    projection = drafts.project(draft_uuid)
    draft = drafts.get(draft_uuid)
    markdown = review_markdown(drafts, draft, projection, note=note)
    create_markdown_artifact(key="draft-review", markdown=markdown,
                             description=f"Draft {draft_uuid} version {draft.version}: {projection.status}")
    return {"draft_uuid": str(draft_uuid), "version": draft.version, "fingerprint": projection.fingerprint,
            "status": projection.status, "markdown": markdown}


def fail_run(message: str) -> None:
    """Fail the current flow run with ``message`` now (before the pause-expiry message of the server wins)."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Failed(message=message), force=True)


@task(name="forget-decision-input", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def forget_decision_input() -> int:
    """Delete every answer (``paused-…-response``) stored for this flow run; returns how many were deleted.

    The server keeps a resume's input in its ``flow_run_input`` table; an edited body may carry sensitive fields
    (an IBAN) that must live only in our tenant-scoped tables. "Already gone" counts as done (rerun-safe).
    """
    deleted = 0
    with get_client(sync_client=True) as client:
        for item in client.filter_flow_run_input(flow_run.id, key_prefix="paused-", limit=1000, exclude_keys=set()):
            if item.key.endswith("-response"):
                try:
                    client.delete_flow_run_input(flow_run.id, item.key)
                except httpx.HTTPStatusError as e:
                    if e.response.status_code != 404:
                        raise
                deleted += 1
    return deleted


@task(name="apply-draft-decision", cache_policy=NO_CACHE)
def apply_draft_decision(draft_uuid: uuid.UUID, decision: dict, review: dict) -> dict:
    """Apply the reviewer's decision to the version and fingerprint they reviewed; logs the summary line when it ends
    the review, else the message for the next review."""
    result = apply_decision(_drafts(), draft_uuid, decision=decision["decision"],
                            approval_code=decision["approval_code"],
                            comment=decision.get("comment") or "", edited_body=decision.get("edited_body") or "",
                            reviewed_version=review["version"], reviewed_fingerprint=review["fingerprint"])
    get_run_logger().info(result.summary() if result.outcome in FINAL else result.message)
    return result.to_json()
