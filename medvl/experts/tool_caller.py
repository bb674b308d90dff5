"""From a model reply to the expert turn that goes back into the conversation (VILA-M3's loop).

    reply --parse_trigger--> none: no expert turn (the reply is the answer)
                          -> TriggerError, unknown expert, argument not in the expert's list:
                             "Sorry I met an error: ..." naming what is valid
                          -> run_with_limits(expert, volume, argument) -> result text (+ overlay PNG)
    expert turn = result text (or the error) + "\\nUse this result to respond to this prompt:\\n" + question

The argument is only compared, character for character, with the strings of the expert's ``valid_arguments``;
it is never evaluated and never used as a path or a command. Only experts given to the caller (built from
``configs/experts``) can run.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.data.volume import Volume
from medvl.experts.expert import Expert
from medvl.experts.limits import ExpertFailure, ExpertLimits, run_with_limits
from medvl.experts.model_card import model_card
from medvl.experts.trigger import Trigger, TriggerError, parse_trigger

__all__ = ["ERROR_PREFIX", "INSTRUCTION", "ExpertTurn", "ToolCaller", "expert_turn_text"]

log = logging.getLogger(__name__)

ERROR_PREFIX = "Sorry I met an error: "
INSTRUCTION = "Use this result to respond to this prompt:\n"


def expert_turn_text(result_text: str, question: str) -> str:
    """The expert turn: the result (or the error) then the original question."""
    return f"{result_text}\n{INSTRUCTION}{question}"


@dataclass
class ExpertTurn:
    """One expert round.

    Attributes:
        trigger: the parsed trigger (None when the reply's trigger could not be parsed).
        text: the expert turn as it goes into the conversation.
        result_text: the expert's result text, or the error message.
        overlay: the overlay PNG, or None.
        data: the expert's numbers ({} on error).
        error: True when the call was refused or failed.
    """

    trigger: Trigger | None
    text: str
    result_text: str
    overlay: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)
    error: bool = False


class ToolCaller:
    """Parses replies, validates triggers and runs the registered experts within limits.

    Args:
        experts: the registry (``build_experts``), trigger name -> expert, or an iterable of experts.
        limits: time and output size limits of every call.
    """

    def __init__(self, experts: dict[str, Expert] | Iterable[Expert], limits: ExpertLimits | None = None) -> None:
        items = list(experts.values()) if isinstance(experts, dict) else list(experts)
        self.experts: dict[str, Expert] = {e.name: e for e in items}
        self.limits = limits or ExpertLimits()

    def card(self) -> str:
        """The model card of the registered experts ("" when there are none)."""
        return model_card(self.experts.values())

    def resolve(self, trigger: Trigger) -> tuple[Expert, str | None]:
        """The expert and argument a trigger names.

        Raises:
            TriggerError: an unknown expert (names the registered ones) or an argument that is not one of the
                expert's valid arguments (names them).
        """
        expert = self.experts.get(trigger.name)
        if expert is None:
            known = ", ".join(sorted(self.experts)) or "none"
            raise TriggerError(f"there is no expert named {trigger.name}; the available experts are: {known}")
        argument = trigger.argument if trigger.argument is not None else expert.default_argument
        if argument is None:
            return expert, None
        if not expert.valid_arguments:
            raise TriggerError(f"the expert {expert.name} takes no argument; call it as <{expert.name}>")
        if argument not in expert.valid_arguments:  # plain string comparison, nothing else
            valid = ", ".join(f"'{a}'" for a in expert.valid_arguments)
            raise TriggerError(f"the expert {expert.name} does not accept that argument; valid args are: {valid}")
        return expert, argument

    def respond(self, reply: str, volume: Volume, question: str, output_dir: str | Path) -> ExpertTurn | None:
        """The expert turn answering ``reply``, or None when the reply holds no trigger.

        Never raises for a bad trigger or a failing expert: those become ``ERROR_PREFIX`` turns.
        """
        try:
            trigger = parse_trigger(reply)
        except TriggerError as error:
            return self._error(None, str(error), question)
        if trigger is None:
            return None
        try:
            expert, argument = self.resolve(trigger)
        except TriggerError as error:
            return self._error(trigger, str(error), question)
        try:
            result = run_with_limits(expert, volume, argument, Path(output_dir), self.limits)
        except ExpertFailure as error:
            log.warning("%s", error)
            return self._error(trigger, str(error), question)
        return ExpertTurn(trigger=Trigger(expert.name, argument), text=expert_turn_text(result.text, question),
                          result_text=result.text, overlay=result.overlay, data=dict(result.data))

    @staticmethod
    def _error(trigger: Trigger | None, message: str, question: str) -> ExpertTurn:
        text = ERROR_PREFIX + message
        return ExpertTurn(trigger=trigger, text=expert_turn_text(text, question), result_text=text, error=True)
