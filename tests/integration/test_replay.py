"""Replay on real Postgres with the billing sample: recovery, dry run, idempotency, unavailable bodies, upcasting,
divergence after a handler change (invariants 6 and 7)."""

from __future__ import annotations

import threading
import uuid
from typing import Annotated

import pytest
from pydantic import Field, ValidationError

from commandlog import Command, NeverStoreCmdBody, registry
from commandlog.bus import CommandBus
from commandlog.replay.service import (
    ReplayRequest,
    ReplayRequestConflictError,
    ReplaySelectionTooLargeError,
    plan,
    replay_batch,
    run_replay,
)
from examples.billing import commands as c
from examples.billing.errors import CustomerNotFoundError


class SetLabel(Command):
    """Test command at version 2: version 1 had ``text`` instead of ``label`` and no ``priority``."""

    cmd_class = "test_replay.SetLabel"
    cmd_version = 2
    label: Annotated[str, Field(min_length=1)]
    priority: int


@registry.upcaster("test_replay.SetLabel", 1)
def _set_label_v1_to_v2(body: dict) -> dict:
    return {"label": body.pop("text"), "priority": body.get("priority", 3)}


class ForgetMe(Command):
    """Test command whose body is stored nowhere."""

    cmd_class = "test_replay.ForgetMe"
    cmd_options = (NeverStoreCmdBody,)
    secret: str


class ChargeCard(Command):
    """Test command that opts out of replay."""

    cmd_class = "test_replay.ChargeCard"
    replayable = False
    amount: int


class Quote(Command):
    """Test command whose handler logic changes between two buses."""

    cmd_class = "test_replay.Quote"
    quantity: int


def rows(db, sql: str, *args) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(sql, args).fetchall()


def failed_rename(bus, ctx, customer_id: int, name: str) -> uuid.UUID:
    with pytest.raises(CustomerNotFoundError) as info:
        bus.execute(c.RenameCustomer(customer_id=customer_id, name=name), ctx)
    return info.value.cmd_uuid


def create(bus, ctx, customer_id: int) -> None:
    bus.execute(c.CreateCustomer(customer_id=customer_id, name=f"C{customer_id}", email=f"c{customer_id}@x.io"), ctx)


def replays_of(db, original: uuid.UUID) -> list[tuple]:
    return rows(db, "SELECT cmd_uuid, status, actor_id, correlation_id FROM tenant_command_log WHERE replay_of = %s",
                original)


def test_failed_commands_are_recovered_by_replay_and_the_originals_stay_failed_and_linked(bus, db, ctx, tenant):
    originals = [failed_rename(bus, ctx, i, f"Renamed {i}") for i in (1, 2, 3)]
    for i in (1, 2, 3):
        create(bus, ctx, i)  # the condition that made them fail is fixed

    request = ReplayRequest(tenant_id=tenant, cmd_class="billing.RenameCustomer", status="failed", mode="execute",
                            requested_by="ops@example")
    report = run_replay(db, bus, request)

    assert [i.outcome for i in report.items] == ["succeeded"] * 3
    assert [i.original_cmd_uuid for i in report.items] == originals
    assert rows(db, "SELECT name FROM billing.customer WHERE tenant_id = %s ORDER BY customer_id", tenant) == [
        ("Renamed 1",), ("Renamed 2",), ("Renamed 3",)]
    for item in report.items:
        original = rows(db, "SELECT status, correlation_id, actor_id FROM command_log WHERE cmd_uuid = %s",
                        item.original_cmd_uuid)[0]
        assert original[0] == "failed" and original[2] == ctx.actor_id
        assert replays_of(db, item.original_cmd_uuid) == [(item.replay_cmd_uuid, "succeeded", "ops@example",
                                                           original[1])]
    # a later request over the same filter finds nothing left to recover
    again = run_replay(db, bus, request.model_copy(update={"mode": "dry_run"}))
    assert again.items == []


def test_a_dry_run_commits_nothing_and_sends_no_email_while_execute_does(bus, db, ctx, tenant, outbox):
    with pytest.raises(CustomerNotFoundError) as info:
        bus.execute(c.IssueInvoice(invoice_id=7, customer_id=1, due_date="2030-01-31",
                                   lines=[{"description": "Plan", "quantity": 2, "unit_price": "5.00"}]), ctx)
    original = info.value.cmd_uuid
    create(bus, ctx, 1)
    log_before = rows(db, "SELECT count(*) FROM tenant_command_log WHERE tenant_id = %s", tenant)
    events_before = rows(db, "SELECT count(*) FROM domain_event WHERE tenant_id = %s", tenant)

    dry = run_replay(db, bus, ReplayRequest(cmd_uuids=[original], requested_by="ops@example"))

    assert [(i.outcome, i.original_status) for i in dry.items] == [("now_succeeds", "failed")]
    assert outbox.sent == []
    assert rows(db, "SELECT count(*) FROM billing.invoice WHERE tenant_id = %s", tenant) == [(0,)]
    assert rows(db, "SELECT count(*) FROM tenant_command_log WHERE tenant_id = %s", tenant) == log_before
    assert rows(db, "SELECT count(*) FROM domain_event WHERE tenant_id = %s", tenant) == events_before
    assert rows(db, "SELECT count(*) FROM replay_request WHERE request_id = %s", dry.plan.request_id) == [(0,)]

    done = run_replay(db, bus, ReplayRequest(cmd_uuids=[original], requested_by="ops@example", mode="execute"))
    assert [i.outcome for i in done.items] == ["succeeded"]
    assert [m["to"] for m in outbox.sent] == ["c1@x.io"]


def test_an_unchanged_command_is_reproduced_and_a_new_failure_is_now_fails(bus, db, ctx, tenant):
    create(bus, ctx, 1)
    renamed = bus.execute(c.RenameCustomer(customer_id=1, name="Same"), ctx).cmd_uuid
    create(bus, ctx, 2)
    rename2 = bus.execute(c.RenameCustomer(customer_id=2, name="Y"), ctx).cmd_uuid
    with db.connection() as conn:  # customer 2 disappears: its rename would fail today
        conn.execute("DELETE FROM billing.customer WHERE tenant_id = %s AND customer_id = 2", (tenant,))

    report = run_replay(db, bus, ReplayRequest(cmd_uuids=[renamed, rename2], requested_by="ops@example"))

    by_id = {i.original_cmd_uuid: i for i in report.items}
    assert by_id[renamed].outcome == "reproduced" and by_id[renamed].diff == ()
    assert by_id[rename2].outcome == "now_fails"
    assert "CustomerNotFoundError: customer 2 does not exist" in by_id[rename2].message


def test_divergence_is_detected_with_a_field_level_diff_after_a_handler_changes(db, ctx):
    def quote_v1(cmd: Quote, hctx) -> dict:
        hctx.emit("Quoted", {"total": cmd.quantity * 10, "currency": "EUR"})
        return {"total": cmd.quantity * 10}

    def quote_v2(cmd: Quote, hctx) -> dict:  # a price change
        hctx.emit("Quoted", {"total": cmd.quantity * 12, "currency": "EUR"})
        return {"total": cmd.quantity * 12, "discounted": False}

    old, new = CommandBus(db), CommandBus(db)
    old.register(Quote, quote_v1)
    new.register(Quote, quote_v2)
    original = old.execute(Quote(quantity=3), ctx).cmd_uuid

    assert [i.outcome for i in run_replay(db, old, ReplayRequest(cmd_uuids=[original], requested_by="qa")).items] \
        == ["reproduced"]
    item = run_replay(db, new, ReplayRequest(cmd_uuids=[original], requested_by="qa")).items[0]

    assert item.outcome == "diverged"
    assert {(d["field"], d["change"], d["original"], d["replay"]) for d in item.diff} == {
        ("result.discounted", "added", None, False),
        ("result.total", "changed", 30, 36),
        ("events[0].payload.total", "changed", 30, 36),
    }
    assert "result.total: 30 -> 36" in item.message


def test_an_old_body_is_upcast_and_one_still_invalid_is_not_replayable(db, ctx, tenant):
    seen: list[SetLabel] = []
    test_bus = CommandBus(db)
    test_bus.register(SetLabel, lambda cmd, hctx: seen.append(cmd) or {"label": cmd.label})
    good = test_bus.execute(SetLabel(label="x", priority=1), ctx).cmd_uuid
    bad = test_bus.execute(SetLabel(label="y", priority=1), ctx).cmd_uuid
    with db.connection() as conn:  # as if logged by version 1 of the class
        conn.execute("UPDATE tenant_command_log SET cmd_version = 1, cmd_body = %s WHERE cmd_uuid = %s",
                     ('{"text": "urgent"}', good))
        conn.execute("UPDATE tenant_command_log SET cmd_version = 1, cmd_body = %s WHERE cmd_uuid = %s",
                     ('{"text": ""}', bad))
    seen.clear()

    report = run_replay(db, test_bus, ReplayRequest(cmd_uuids=[good, bad], requested_by="qa", mode="execute"))

    by_id = {i.original_cmd_uuid: i for i in report.items}
    assert by_id[good].outcome == "succeeded"
    assert seen == [SetLabel(label="urgent", priority=3)]
    assert rows(db, "SELECT cmd_version, cmd_body FROM tenant_command_log WHERE cmd_uuid = %s",
                by_id[good].replay_cmd_uuid) == [(2, {"label": "urgent", "priority": 3})]
    assert by_id[bad].outcome == "not_replayable"
    assert by_id[bad].message.startswith("not replayable: label: String should have at least 1 character")


def test_unavailable_bodies_are_not_replayable_and_the_others_go_on(bus, db, ctx, tenant):
    test_bus = CommandBus(db)
    test_bus.register(ForgetMe, lambda cmd, hctx: None)
    test_bus.register(ChargeCard, lambda cmd, hctx: None)
    never_stored = test_bus.execute(ForgetMe(secret="s3cret"), ctx).cmd_uuid
    opted_out = test_bus.execute(ChargeCard(amount=5), ctx).cmd_uuid
    create(bus, ctx, 1)
    purged = bus.execute(c.RenameCustomer(customer_id=1, name="Purged"), ctx).cmd_uuid
    deleted = bus.execute(c.RenameCustomer(customer_id=1, name="Deleted"), ctx).cmd_uuid
    fine = bus.execute(c.UpdatePaymentDetails(customer_id=1, holder="Ada", iban="DE44500105175407324931"), ctx)
    card = bus.execute(c.AttachCardToken(customer_id=1, card_token="tok_12345678"), ctx).cmd_uuid
    with db.connection() as conn:  # retention purged one body and one whole row
        conn.execute("UPDATE tenant_command_log SET cmd_body = NULL WHERE cmd_uuid = %s", (purged,))
        conn.execute("DELETE FROM tenant_command_log WHERE cmd_uuid = %s", (deleted,))
        conn.execute("UPDATE billing.customer SET iban = NULL, card_token = NULL WHERE tenant_id = %s", (tenant,))

    report = run_replay(db, bus, ReplayRequest(
        cmd_uuids=[never_stored, opted_out, purged, deleted, fine.cmd_uuid, card], requested_by="ops", mode="execute"))

    by_id = {i.original_cmd_uuid: (i.outcome, i.message) for i in report.items}
    assert by_id[never_stored] == ("not_replayable", "not replayable: body unavailable")
    assert by_id[purged] == ("not_replayable", "not replayable: body unavailable")
    assert by_id[opted_out] == ("not_replayable",
                                "not replayable: test_replay.ChargeCard opts out of replay (replayable = False)")
    assert by_id[deleted][0] == "not_found"
    assert by_id[fine.cmd_uuid] == ("succeeded", None)
    assert by_id[card] == ("succeeded", None)  # excluded from the global log only: the tenant log has the body
    # the payload came from the tenant log: the sensitive IBAN and the excluded card token, not the global log's
    # withheld marker or missing body
    assert rows(db, "SELECT iban, card_token FROM billing.customer WHERE tenant_id = %s", tenant) == [
        ("DE44500105175407324931", "tok_12345678")]
    assert rows(db, "SELECT cmd_body FROM command_log WHERE cmd_uuid = %s", card) == [(None,)]
    for refused in (never_stored, opted_out, purged):
        assert replays_of(db, refused) == []


def test_a_crash_between_batches_never_executes_an_original_twice(bus, db, ctx, tenant):
    originals = [failed_rename(bus, ctx, i, f"N{i}") for i in range(1, 6)]
    for i in range(1, 6):
        create(bus, ctx, i)
    request = ReplayRequest(tenant_id=tenant, status="failed", mode="execute", requested_by="ops", batch_size=2)

    def crash(number: int, results) -> None:
        if number == 0:
            raise KeyboardInterrupt("worker killed between batches")

    with pytest.raises(KeyboardInterrupt):
        run_replay(db, bus, request, after_batch=crash)
    request_id = rows(db, "SELECT request_id FROM replay_item WHERE original_cmd_uuid = %s", originals[0])[0][0]
    assert [len(replays_of(db, o)) for o in originals] == [1, 1, 0, 0, 0]

    resumed = run_replay(db, bus, request.model_copy(update={"request_id": request_id}))
    assert [i.outcome for i in resumed.items] == ["already_replayed"] * 2 + ["succeeded"] * 3
    first = replays_of(db, originals[0])[0][0]
    assert resumed.items[0].message == f"already replayed as {first} (succeeded)"

    third = run_replay(db, bus, request.model_copy(update={"request_id": request_id}))
    assert [i.outcome for i in third.items] == ["already_replayed"] * 5
    assert [len(replays_of(db, o)) for o in originals] == [1] * 5


def test_two_concurrent_runs_of_one_request_execute_each_original_exactly_once(bus, db, ctx, tenant):
    originals = [failed_rename(bus, ctx, i, f"Race {i}") for i in range(1, 21)]
    for i in range(1, 21):
        create(bus, ctx, i)
    the_plan = plan(db, ReplayRequest(tenant_id=tenant, status="failed", mode="execute", requested_by="ops"))
    start = threading.Barrier(2)
    outcomes: list[list[str]] = []

    def run() -> None:
        start.wait()
        outcomes.append([i.outcome for i in replay_batch(db, bus, the_plan, the_plan.cmd_uuids)])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(outcomes) == [["already_replayed"] * 20, ["succeeded"] * 20]
    assert [[r[1] for r in replays_of(db, o)] for o in originals] == [["succeeded"]] * 20


def test_a_failed_attempt_whose_item_was_not_closed_is_closed_on_rerun_not_executed_again(bus, db, ctx, tenant):
    original = failed_rename(bus, ctx, 1, "Later")
    request = ReplayRequest(cmd_uuids=[original], mode="execute", requested_by="ops")
    the_plan = plan(db, request)
    [first] = replay_batch(db, bus, the_plan, the_plan.cmd_uuids)
    assert first.outcome == "failed" and "does not exist" in first.message
    with db.connection() as conn:  # as if the process died after the failed row, before closing the item
        conn.execute("UPDATE replay_item SET state = 'pending', outcome = NULL WHERE request_id = %s",
                     (the_plan.request_id,))
    create(bus, ctx, 1)

    [again] = replay_batch(db, bus, the_plan, the_plan.cmd_uuids)

    assert again.outcome == "already_replayed"
    assert again.message.startswith(f"already replayed as {first.replay_cmd_uuid} (failed)")
    assert [r[1] for r in replays_of(db, original)] == ["failed"]


def test_a_pending_item_that_never_ran_runs_with_its_assigned_id(bus, db, ctx, tenant):
    original = failed_rename(bus, ctx, 1, "Later")
    create(bus, ctx, 1)
    the_plan = plan(db, ReplayRequest(cmd_uuids=[original], mode="execute", requested_by="ops"))
    assigned = uuid.uuid4()
    with db.connection() as conn:  # the id was assigned, then the process died before the command committed
        conn.execute("UPDATE replay_item SET state = 'pending', replay_cmd_uuid = %s WHERE request_id = %s",
                     (assigned, the_plan.request_id))

    [item] = replay_batch(db, bus, the_plan, the_plan.cmd_uuids)

    assert (item.outcome, item.replay_cmd_uuid) == ("succeeded", assigned)
    assert [r[:2] for r in replays_of(db, original)] == [(assigned, "succeeded")]


def test_a_selection_over_the_cap_is_refused_with_a_clear_message(bus, db, ctx, tenant):
    for i in (1, 2, 3):
        failed_rename(bus, ctx, i, "x")
    with pytest.raises(ReplaySelectionTooLargeError, match="matches 3 commands, more than max_commands=2"):
        plan(db, ReplayRequest(tenant_id=tenant, status="failed", max_commands=2, requested_by="ops"))
    assert rows(db, "SELECT count(*) FROM replay_item WHERE tenant_id = %s", tenant) == [(0,)]


def test_reusing_a_request_id_in_another_mode_is_refused(bus, db, ctx, tenant):
    original = failed_rename(bus, ctx, 1, "x")
    request = ReplayRequest(cmd_uuids=[original], mode="execute", requested_by="ops")
    the_plan = plan(db, request)
    assert plan(db, request.model_copy(update={"request_id": the_plan.request_id})).resumed
    with db.connection() as conn:
        conn.execute("UPDATE replay_request SET mode = 'dry_run' WHERE request_id = %s", (the_plan.request_id,))
    with pytest.raises(ReplayRequestConflictError):
        plan(db, request.model_copy(update={"request_id": the_plan.request_id}))


def test_a_request_needs_ids_or_a_filter_but_not_both():
    with pytest.raises(ValidationError, match="cmd_uuids: give at least one command id"):
        ReplayRequest(requested_by="ops")
    with pytest.raises(ValidationError, match="not both"):
        ReplayRequest(cmd_uuids=[uuid.uuid4()], status="failed", requested_by="ops")
    with pytest.raises(ValidationError, match="requested_by"):
        ReplayRequest(status="failed", requested_by="")
