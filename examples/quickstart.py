"""The README's example, line for line (a test checks they agree): ``.venv/bin/python -m examples.quickstart``."""

from typing import Annotated

from commandlog import Command, ExecutionContext, Sensitive
from commandlog.bootstrap import runtime

class SetIban(Command):
    cmd_class = "quickstart.SetIban"                # stable registered name
    account: str
    iban: Annotated[str, Sensitive]                 # withheld from the global log, kept in the tenant log
    def subjects(self): return [f"account:{self.account}"]

def set_iban(cmd, ctx):                             # writes through the command's own transaction
    ctx.conn.execute("CREATE TABLE IF NOT EXISTS iban (account text PRIMARY KEY, iban text)")
    ctx.conn.execute("INSERT INTO iban VALUES (%s, %s) ON CONFLICT (account) DO UPDATE SET iban = excluded.iban",
                     (cmd.account, cmd.iban))
    ctx.emit("IbanSet", {"account": cmd.account})

db, bus = runtime()                                 # embedded Postgres under $CMDLOG_HOME, migrated
bus.register(SetIban, set_iban)
ctx = ExecutionContext(tenant_id="acme", actor_id="alice@acme")
print(bus.execute(SetIban(account="42", iban="DE89370400440532013000"), ctx).status)
