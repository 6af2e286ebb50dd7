"""A REPL session: runs programs one after another, keeping variables and precision."""
from __future__ import annotations

from .effects import RecordingEffects
from .limits import Limits
from .program import compile_program
from .result import Result
from .store import MemoryStore


class Session:
    """Each `run` sees the variables (and SETPRECISION) left by the previous ones.

    Runs are in-process: the REPL is for learning on one's own machine.
    """

    def __init__(self, limits: Limits | None = None, user: str = "repl", store=None, effects=None):
        self.limits = limits or Limits()
        self.user = user
        self.store = store if store is not None else MemoryStore(
            self.limits.max_saved_keys, self.limits.max_saved_value_length)
        self.effects = effects if effects is not None else RecordingEffects()
        self.variables: dict = {}
        self.state: dict = {}

    def run(self, source: str) -> Result:
        """Compile and run; raises WarbleError for a syntax error."""
        program = compile_program(source, limits=self.limits, repl_vars=self.variables.keys(),
                                  precision=self.state.get("ctx") is not None)
        state = dict(self.state)
        result = program.run(user=self.user, store=self.store, effects=self.effects,
                             variables=self.variables, state=state)
        self.variables.update(state.get("variables") or {})
        self.state = {"ctx": state.get("ctx"), "digits": state.get("digits")}
        return result
