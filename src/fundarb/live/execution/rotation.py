"""A rotating perp/perp carry on the venues: which pair of venues the trade
log holds, and the journal of a move from one pair to another (``fundarb
trade rotate``).

The pair held is journal state (``pair_held``: the long venue and the short
venue, ccxt ids); without it, the config's own [spot] (long) and [perp]
(short). A rotation is one ``rotate`` operation around two paired ones, the
close of the pair held and the open of the new pair, whose plans name it
(``rotation``). It is journaled before the close; the pair held becomes the
new one once the close is done, before the open is sent, so whatever
instant a process stops at, the next start acts on the accounts that hold
something:

- stopped during the close: the pair held is still the old one; the start's
  recovery finishes the close as any recovery does (a lone leg traded
  back), and the rotation ends ``failed``: nothing was opened;
- stopped between the close and the open: the old pair is flat and the new
  one holds nothing; the start says so and the rotation ends
  ``interrupted``. Recovery never opens (the intent may no longer hold), so
  nothing is opened twice: a new open is only one the user asks for;
- stopped during the open: the start's recovery finishes the open (a lone
  leg traded back); the rotation ends ``done`` when the open did, else
  ``interrupted``.

Each new account name (``binanceusdm:long`` after ``binanceusdm:perp``) is
bound to its venue identity like any other (``Journal.bind_venues``): the
same venue account under another name, whose trades and payments are kept
apart (``reconcile.same_market_accounts``).
"""

from __future__ import annotations

import json
from typing import Any

from fundarb.live.journal import Journal

ROTATE = "rotate"  # the operations kind of a rotation
HELD_KEY = "pair_held"  # journal state: {"long": ccxt id, "short": ccxt id}, the pair the trade log holds
MOVED = ("done", "rebalanced")  # a paired operation that did what it was asked


def held_pair(journal: Journal) -> tuple[str, str] | None:
    """(long, short) venue ids the trade log holds; None: the config's own pair."""
    text = journal.get_state(HELD_KEY)
    if not text:
        return None
    pair = json.loads(text)
    return str(pair["long"]), str(pair["short"])


def set_held(journal: Journal, long: str, short: str, ts: int) -> None:
    journal.set_state(HELD_KEY, json.dumps({"long": long, "short": short}), ts)


def pair_text(pair: tuple[str, str]) -> str:
    return f"long {pair[0]} / short {pair[1]}"


def begin_rotation(journal: Journal, ts: int, config_hash: str, qty: float, held: tuple[str, str],
                   to: tuple[str, str], plan: dict[str, Any]) -> int:
    """Journal a rotation from ``held`` to ``to`` of ``qty`` BTC a leg, before anything is sent."""
    doc = {"from": {"long": held[0], "short": held[1]}, "to": {"long": to[0], "short": to[1]}, **plan}
    return journal.begin_operation(ts, ROTATE, config_hash, qty, doc)


def parts(journal: Journal, rotation: int) -> dict[str, Any]:
    """The paired operations of ``rotation`` by kind ("close", "open"): their rows."""
    out: dict[str, Any] = {}
    for op in journal.operations():
        if op["kind"] in ("open", "close") and json.loads(op["plan"] or "{}").get("rotation") == rotation:
            out[op["kind"]] = op
    return out


def recover_rotations(session: Any) -> list[str]:
    """End every rotation a stopped process left ``executing`` by what its
    paired operations did (after their own recovery); never sends an order.
    The notes, one a rotation."""
    journal, notes = session.journal, []
    for op in journal.operations("executing"):
        if op["kind"] != ROTATE:
            continue
        plan = json.loads(op["plan"] or "{}")
        old = (plan["from"]["long"], plan["from"]["short"])
        new = (plan["to"]["long"], plan["to"]["short"])
        done = parts(journal, op["op_id"])
        close, opened = done.get("close"), done.get("open")
        if any(o is not None and o["status"] in ("executing", "needs_recovery") for o in (close, opened)):
            notes.append(f"rotation {op['op_id']} ({pair_text(old)} to {pair_text(new)}) waits for its paired "
                         "operations to be finished")
            continue
        if opened is not None and opened["status"] in MOVED:
            status, text = "done", (f"the pair held before ({pair_text(old)}) was closed by operation "
                                    f"{close['op_id'] if close is not None else '?'}, the new pair ({pair_text(new)}) "
                                    f"opened by operation {opened['op_id']}")
        elif close is None or close["status"] not in MOVED:
            why = "its close was not sent" if close is None else f"its close (operation {close['op_id']}) ended {close['status']}"
            status, text = "failed", (f"{why}: the pair held stays {pair_text(old)}; nothing of {pair_text(new)} "
                                      "was opened")
        else:
            what = ("was not sent" if opened is None
                    else f"(operation {opened['op_id']}) ended {opened['status']}, its legs traded back")
            status, text = "interrupted", (
                f"stopped after its close (operation {close['op_id']}): the pair held before ({pair_text(old)}) is "
                f"flat, and the open of {pair_text(new)} {what}, so it holds nothing; recovery opens nothing: "
                f"`fundarb trade rotate --long {new[0]} --short {new[1]} --size ...` opens it")
        journal.finish_operation(op["op_id"], session.now_ns(), status, text)
        session.alert("recovery", f"rotation {op['op_id']} was left unfinished by a stopped process: {text}",
                      "warning")
        notes.append(f"rotation {op['op_id']}: {status}; {text}")
    return notes
