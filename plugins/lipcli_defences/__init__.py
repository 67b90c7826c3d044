"""lipcli's first-party training defences, registered through the public ``register_defences`` hook."""

from __future__ import annotations

from lipcli import hookimpl
from lipcli.hookspecs import Register


@hookimpl
def register_defences(register: Register) -> None:
    from lipcli.train.defence import PlainTraining

    register("j0", PlainTraining, "J0: plain training (empirical risk minimisation), the undefended baseline")
