"""The trigger parser on VILA-M3's reply shapes (m3/demo/experts/expert_monai_vista3d.py) and on bad ones."""
import pytest

from medvl.experts import Trigger, TriggerError, parse_trigger


@pytest.mark.parametrize("reply, expected", [
    ("I segmented the entire image using <VISTA3D(everything)>.", ("VISTA3D", "everything")),
    ("<VISTA3D>", ("VISTA3D", None)),
    ("<VISTA3D()>", ("VISTA3D", None)),
    ("This looks like a job for <VISTA3D(hepatic tumor)>.", ("VISTA3D", "hepatic tumor")),
    ("<VISTA3D( 'hepatic tumor' )>", ("VISTA3D", "hepatic tumor")),
    ("<CTMEASURE(liver)>", ("CTMEASURE", "liver")),
])
def test_vila_m3_reply_shapes(reply, expected):
    assert parse_trigger(reply) == Trigger(*expected)


def test_no_trigger_is_none():
    assert parse_trigger("The liver is normal in size.") is None


@pytest.mark.parametrize("reply, says", [
    ("<VISTA3D(liver)> and <CTMEASURE(liver)>", "2 expert triggers"),
    ("<VISTA3D(a)(b)>", "more than one argument"),
    ("<VISTA3D(liver, spleen)>", "more than one argument"),
    ("<VISTA3D(liver>", "parentheses"),
    ("<  >", "not an expert trigger"),
    ("<__import__('os')>", "not an expert trigger"),
    ("<VISTA3D(" + "x" * 200 + ")>", "over the limit"),
])
def test_bad_replies_raise_with_a_reason(reply, says):
    with pytest.raises(TriggerError, match=says):
        parse_trigger(reply)


def test_code_and_paths_stay_plain_strings():
    # parsed as text only; refusing them is the tool caller's job (test_tool_caller)
    with pytest.raises(TriggerError):  # nested parentheses are not one plain argument
        parse_trigger("<CTSEG(__import__('os').system('ls'))>")
    assert parse_trigger("<CTSEG(../../etc/passwd)>") == Trigger("CTSEG", "../../etc/passwd")
