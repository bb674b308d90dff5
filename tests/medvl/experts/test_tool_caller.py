"""Model card text, refusal of unknown experts / arguments, error injection, time and size limits."""
import time

import numpy as np
import pytest

from medvl.data.volume import Volume
from medvl.experts import (ERROR_PREFIX, INSTRUCTION, Expert, ExpertLimits, ExpertResult, ToolCaller, Trigger,
                           model_card)


class EchoExpert(Expert):
    """Says which argument it got and the volume's mean; can sleep, raise or talk too much."""

    def __init__(self, name="SEG", sleep_s=0.0, fail=False, chars=0, arguments=("everything", "hepatic tumor")):
        super().__init__(name, modality="CT", task="segmentation", overview="echoes", accuracy="Dice 0.50 (test)",
                         valid_arguments=arguments, default_argument=arguments[0] if arguments else None)
        self.sleep_s, self.fail, self.chars, self.calls = sleep_s, fail, chars, []

    def run(self, volume, argument, output_dir):
        self.calls.append((argument, dict(volume.meta)))
        time.sleep(self.sleep_s)
        if self.fail:
            raise RuntimeError("bundle weights missing")
        return ExpertResult(text="x" * self.chars or f"{argument}: mean {volume.array.mean():.1f}")


@pytest.fixture
def volume():
    return Volume(np.full((4, 4, 4), 7.0), np.eye(4), meta={"source": "/data/DOE_JOHN/ct.nii.gz"})


def test_model_card_matches_vila_m3_format():
    card = model_card([EchoExpert(), EchoExpert("CXR", arguments=())])
    assert card == (
        "Here is a list of available expert models:\n"
        "<SEG(args)> Modality: CT, Task: segmentation, Overview: echoes, Accuracy: Dice 0.50 (test), "
        "Valid args are: 'everything', or 'hepatic tumor'\n"
        "<CXR(args)> Modality: CT, Task: segmentation, Overview: echoes, Accuracy: Dice 0.50 (test), "
        "Valid args are: None\n"
        "Give the model <NAME(args)> when selecting a suitable expert model.\n")


def test_runs_the_expert_and_appends_the_question(volume, tmp_path):
    expert = EchoExpert()
    turn = ToolCaller([expert]).respond("Let me check <SEG(hepatic tumor)>.", volume, "Is there a tumor?", tmp_path)
    assert not turn.error and turn.trigger == Trigger("SEG", "hepatic tumor")
    assert turn.text == f"hepatic tumor: mean 7.0\n{INSTRUCTION}Is there a tumor?"
    assert expert.calls == [("hepatic tumor", {})]  # the volume's meta (a path with a name) never reaches it


def test_default_argument(volume, tmp_path):
    turn = ToolCaller([EchoExpert()]).respond("<SEG>", volume, "q", tmp_path)
    assert turn.trigger == Trigger("SEG", "everything")


def test_no_trigger_no_turn(volume, tmp_path):
    assert ToolCaller([EchoExpert()]).respond("The liver is normal.", volume, "q", tmp_path) is None


@pytest.mark.parametrize("reply, says", [
    ("<VISTA3D(everything)>", "no expert named VISTA3D; the available experts are: SEG"),
    ("<SEG(__import__('os').system('rm -rf /'))>", "unexpected text"),
    ("<SEG(open('/etc/passwd').read())>", "unexpected text"),
    ("<SEG(/etc/passwd)>", "valid args are: 'everything', 'hepatic tumor'"),
    ("<SEG(../../models/model.pt)>", "valid args are"),
    ("<SEG(a)> <SEG(b)>", "2 expert triggers"),
])
def test_refusals_are_injected_back_and_nothing_runs(volume, tmp_path, reply, says):
    expert = EchoExpert()
    turn = ToolCaller([expert]).respond(reply, volume, "q", tmp_path)
    assert turn.error and turn.result_text.startswith(ERROR_PREFIX) and says in turn.result_text
    assert expert.calls == []


def test_an_expert_that_raises_is_reported(volume, tmp_path):
    turn = ToolCaller([EchoExpert(fail=True)]).respond("<SEG>", volume, "q", tmp_path)
    assert turn.error and "RuntimeError: bundle weights missing" in turn.result_text


def test_time_limit(volume, tmp_path):
    caller = ToolCaller([EchoExpert(sleep_s=2.0)], ExpertLimits(time_limit_s=0.2))
    start = time.monotonic()
    turn = caller.respond("<SEG>", volume, "q", tmp_path)
    assert time.monotonic() - start < 1.5
    assert turn.error and "time limit of 0.2 s" in turn.result_text


def test_output_size_limit(volume, tmp_path):
    turn = ToolCaller([EchoExpert(chars=5000)], ExpertLimits(max_text_chars=100)).respond("<SEG>", volume, "q", tmp_path)
    assert turn.error and "5000 characters, over the limit of 100" in turn.result_text


def test_bad_expert_definitions():
    with pytest.raises(ValueError, match="identifier"):
        EchoExpert(name="bad name(")
    with pytest.raises(ValueError, match="default_argument"):
        Expert.__init__(EchoExpert(), "SEG", modality="CT", task="t", overview="o", accuracy="a",
                        valid_arguments=["a"], default_argument="b")
