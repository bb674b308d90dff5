"""Expert tools in VILA-M3's protocol: a model card in the prompt, a ``<NAME(arg)>`` trigger in the reply, the
expert's result (text, optional overlay PNG) back as an ``expert`` turn, then the answer.

    from medvl.experts import parse_trigger, TriggerError
    parse_trigger("I segmented the entire image using <VISTA3D(everything)>.")  # Trigger("VISTA3D", "everything")

Experts are built from ``configs/experts/*.yaml`` only (``build_experts``); see docs/experts.md.
"""
from medvl.experts.expert import Expert, ExpertResult
from medvl.experts.limits import ExpertFailure, ExpertLimits, run_with_limits
from medvl.experts.model_card import card_line, model_card
from medvl.experts.registry import build_experts, load_expert_configs
from medvl.experts.tool_caller import ERROR_PREFIX, INSTRUCTION, ExpertTurn, ToolCaller
from medvl.experts.trigger import Trigger, TriggerError, parse_trigger

__all__ = [
    "ERROR_PREFIX", "INSTRUCTION", "Expert", "ExpertFailure", "ExpertLimits", "ExpertResult", "ExpertTurn",
    "ToolCaller", "Trigger", "TriggerError", "build_experts", "card_line", "load_expert_configs", "model_card",
    "parse_trigger", "run_with_limits",
]
