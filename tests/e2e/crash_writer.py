"""Writes to a DM tree as fast as it can until killed (driven by test_crash.py).

Every round is what a server's session does: an Atomic that sets ./Vendor/A and
./Vendor/B to the same number, an Add of a new node and a Delete of an old one, and a
large value replaced whole. The invariants a crash must never break: A == B, the large
value is one of the values ever written in full, the tree's structure is intact.
"""

from __future__ import annotations

import sys

from omadm.protocol.messages import Add, Delete, Item, Meta, Replace, Target
from omadm.tree.store import TreeStore
from omadm.tree.tree import DMTree


def main(db: str) -> None:
    tree = DMTree(TreeStore(db))
    if tree.system_get("./Vendor") is None:
        tree.system_add_interior("./Vendor", acl="Add=*&Delete=*&Get=*&Replace=*")
        tree.system_add_interior("./Vendor/Churn")
        for name in ("A", "B", "Big"):
            tree.system_set(f"./Vendor/{name}", "0")
    session = tree.session("crash-test")
    n = int(tree.system_value("./Vendor/A") or 0)
    print("ready", flush=True)
    while True:
        n += 1
        session.begin_atomic()
        ok = all(
            o.code == 200
            for cmd in (
                Replace("1", (Item(target=Target("./Vendor/A"), data=str(n)),)),
                Replace("2", (Item(target=Target("./Vendor/B"), data=str(n)),)),
            )
            for o in session.execute(cmd)
        )
        session.end_atomic(commit=ok)
        session.execute(
            Add("3", (Item(target=Target(f"./Vendor/Churn/n{n}"), meta=Meta(format="int"), data=str(n)),))
        )
        session.execute(Delete("4", (Item(target=Target(f"./Vendor/Churn/n{n - 3}")),)))
        session.execute(Replace("5", (Item(target=Target("./Vendor/Big"), data=str(n % 10) * 20000),)))


if __name__ == "__main__":
    main(sys.argv[1])
