"""Flow ``draft-approval``: show a draft's projection in the Prefect UI and wait for a person to decide.

Changes: on approve, executes the draft's command once (logged with ``draft_uuid``, the approver as actor); on reject,
marks the draft rejected with the comment; an edited body is saved as a new version and reviewed again. The approver
is the operator the form's single-use approval code was issued to (``commandlog.auth.approval_codes``), never a name
typed into the form; a refused code is explained in the next review and changes nothing. Each answer is deleted from
Prefect's ``flow_run_input`` as soon as it is read (an edited body may hold sensitive values). A timeout changes
nothing (the draft stays open) and fails the run. Rerun-safe: a new run re-projects; a decided draft is reported as
such, never executed twice.
"""

from __future__ import annotations

import uuid
from typing import Literal

from prefect import flow
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed, State
from pydantic import Field

from commandlog.drafts.errors import DraftApprovalTimeoutError
from commandlog.drafts.review import FINAL
from tasks.drafts import apply_draft_decision, fail_run, forget_decision_input, project_draft


class DraftDecision(RunInput):
    """The reviewer's form: approve or reject, your approval code, why; optionally an edited body to review first."""

    decision: Literal["approve", "reject"] = Field(description="Approve executes exactly the reviewed version.")
    approval_code: str = Field(min_length=1, max_length=40,
                               description="From `cmdlog draft approval-code <draft> --token <operator token>`: "
                                           "records you as the approver; single use, 15 minutes.")
    comment: str = Field("", max_length=2000, description="Why (shown with a rejection).")
    edited_body: str = Field("", description="Optional: the whole body as JSON; saved, projected and shown again.")


@flow(name="draft-approval", log_prints=True, validate_parameters=True)
def draft_approval(draft_uuid: uuid.UUID, timeout_seconds: int = 3600, poll_interval_seconds: int = 5) -> State:
    """Project, publish the review, pause for a decision; an edit re-projects and asks again.

    Ends Completed with the decision's summary line as its message; calling the flow returns the decision (a map).
    """
    note = None
    while True:
        review = project_draft(draft_uuid, note)
        form = DraftDecision.with_initial_data(description=review["markdown"], decision="approve")
        try:
            decision = pause_flow_run(wait_for_input=form, timeout=timeout_seconds,
                                      poll_interval=poll_interval_seconds)
        except FlowPauseTimeout:
            message = (f"no decision on draft {draft_uuid} within {timeout_seconds}s: the draft stays open and "
                       "unexecuted; start draft-approval again to review it")
            fail_run(message)
            raise DraftApprovalTimeoutError(message) from None
        forget_decision_input()  # before acting: the answer (an edited body, the code) leaves Prefect's database
        result = apply_draft_decision(draft_uuid, decision.model_dump(), review)
        if result["outcome"] in FINAL:
            return Completed(message=result["summary"], data=result)
        note = result["message"]
