"""load_reward: registered names, 'package.module:function', 'path/file.py:function', and every way they fail."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from r1lab.config import RewardSpec
from r1lab.errors import UserError
from r1lab.rewards import REWARDS, load_reward

USER_MODULE = '''
def length_bonus(completion, *, prompt, target_words, scale=1.0, **_):
    """Reads the prompt, a dataset column and a kwarg."""
    return scale * float(len(completion.split()) == target_words) + (0.5 if prompt.endswith("?") else 0.0)

def loose(completion, **columns):
    return float(columns.get("answer") == completion)

NOT_A_FUNCTION = 3
'''


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def test_registered_name_binds_kwargs_and_declares_columns() -> None:
    fn = load_reward(RewardSpec(name="exact", kwargs={"answer_key": "label"}))
    assert fn.label == "exact" and fn.correctness
    assert fn.columns == {"label"}
    assert fn("Answer: cat", prompt="", label="cat") == 1.0


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(UserError) as info:
        load_reward(RewardSpec(name="maths"))
    message = str(info.value)
    assert "unknown reward 'maths'" in message
    for name in ("math", "numeric", "exact", "choice", "classification", "format", "overlong"):
        assert name in message
    assert "package.module:function" in message


def test_unknown_kwarg_of_a_builtin_names_its_options() -> None:
    with pytest.raises(UserError, match=r"no option 'tolerance'") as info:
        load_reward(RewardSpec(name="numeric", kwargs={"tolerance": 0.1}))
    assert "rel_tol" in str(info.value) and "tol" in str(info.value)


def test_file_function_reads_prompt_columns_and_kwargs(tmp_path: Path) -> None:
    path = write(tmp_path / "my_rewards.py", USER_MODULE)
    fn = load_reward(RewardSpec(name=f"{path}:length_bonus", kwargs={"scale": 2.0}))
    assert fn.label == "length_bonus" and not fn.correctness
    assert fn.columns == {"target_words"}  # a parameter without a default is a required column
    assert fn("two words", prompt="why?", target_words=2) == 2.5
    assert fn("two words", prompt="say.", target_words=3) == 0.0
    # loading the same file twice gives the same module, not a second copy
    assert load_reward(RewardSpec(name=f"{path}:length_bonus")).fn is fn.fn


def test_relative_file_path_is_read_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "r.py", USER_MODULE)
    monkeypatch.chdir(tmp_path)
    assert load_reward(RewardSpec(name="r.py:loose"))("x", prompt="", answer="x") == 1.0


def test_user_function_with_var_kwargs_accepts_any_kwarg(tmp_path: Path) -> None:
    path = write(tmp_path / "m.py", USER_MODULE)
    fn = load_reward(RewardSpec(name=f"{path}:loose", kwargs={"answer": "y"}))
    assert fn.columns == set()
    assert fn("y", prompt="", answer="ignored: the kwarg wins") == 1.0
    with pytest.raises(UserError, match="no option 'bogus'"):
        write(tmp_path / "strict.py", "def f(completion, *, prompt):\n    return 1.0\n")
        load_reward(RewardSpec(name=f"{tmp_path / 'strict.py'}:f", kwargs={"bogus": 1}))


def test_package_module_function(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "myrewards"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package / "scoring.py", USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward(RewardSpec(name="myrewards.scoring:loose"))
    assert fn("a", prompt="", answer="a") == 1.0


def test_missing_file_and_missing_module(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="reward file not found"):
        load_reward(RewardSpec(name=f"{tmp_path}/nope.py:f"))
    with pytest.raises(UserError, match="cannot be imported") as info:
        load_reward(RewardSpec(name="no_such_package_xyz.mod:f"))
    assert "PYTHONPATH" in str(info.value)


def test_file_that_does_not_import_points_at_its_line(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.py", "def f(completion, **_):\n    return 1.0\n\ndef g(:\n    pass\n")
    with pytest.raises(UserError, match="SyntaxError") as info:
        load_reward(RewardSpec(name=f"{broken}:f"))
    assert f"{broken}:4" in str(info.value)
    raising = write(tmp_path / "raising.py", "import json\n\nx = json.loads('{')\n")
    with pytest.raises(UserError, match="JSONDecodeError") as info:
        load_reward(RewardSpec(name=f"{raising}:f"))
    assert f"{raising}:3" in str(info.value)
    missing_dep = write(tmp_path / "dep.py", "import not_installed_pkg_xyz\n")
    with pytest.raises(UserError, match="not_installed_pkg_xyz"):
        load_reward(RewardSpec(name=f"{missing_dep}:f"))


def test_missing_or_non_callable_attribute(tmp_path: Path) -> None:
    path = write(tmp_path / "m.py", USER_MODULE)
    with pytest.raises(UserError, match="has no function 'nope'") as info:
        load_reward(RewardSpec(name=f"{path}:nope"))
    assert "length_bonus" in str(info.value) and "loose" in str(info.value)
    with pytest.raises(UserError, match="not a function"):
        load_reward(RewardSpec(name=f"{path}:NOT_A_FUNCTION"))
    with pytest.raises(UserError, match="does not name a function"):
        load_reward(RewardSpec(name="some.module:"))


def test_registered_reward_from_outside_the_package() -> None:
    from r1lab.rewards import reward

    if "test_only_len" not in REWARDS:

        @reward("test_only_len", columns=("gold",), correctness=True)
        def _len(completion: str, *, gold: str, **_) -> float:
            return float(len(completion) == len(gold))

    fn = load_reward(RewardSpec(name="test_only_len"))
    assert fn.columns == {"gold"} and fn.correctness
    assert fn("abc", prompt="", gold="xyz") == 1.0
