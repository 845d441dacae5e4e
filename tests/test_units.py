"""Fast unit tests: arms, splits, HIGGS file checks, result formatting. No Ray, no training."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from pathlib import Path

import pytest

from raypkg.arms import ARMS, Arm, build_model, get_arms, make_arm
from raypkg.asha import Rungs, rung_epochs
from raypkg.config import AshaConfig, ResourcesConfig, Splits, SweepConfig, TrainConfig
from raypkg.data import SplitRows, check_higgs, resolve_splits, sample_path
from raypkg.errors import UsageError
from raypkg.results import format_rows, load_rows

# --- arms -------------------------------------------------------------------------------------

TUTORIAL_PARAMS = {
    "tiny": 481, "small": 753, "medium": 10_241,
    "large": 803_329, "l2": 803_329, "dropout": 803_329, "combined": 803_329,
}  # fmt: skip
EXPECTED_PARAMS = {**TUTORIAL_PARAMS, "l1": 803_329, "l1_l2": 803_329}
# (l1, l2, dropout) of each arm's hidden layers, as the TensorFlow "Overfit and underfit" tutorial sets them
EXPECTED_REGULARIZATION = {
    "tiny": (0, 0, 0), "small": (0, 0, 0), "medium": (0, 0, 0), "large": (0, 0, 0),
    "l2": (0, 0.001, 0), "dropout": (0, 0, 0.5), "combined": (0, 0.0001, 0.5),
    "l1": (0.001, 0, 0), "l1_l2": (0.001, 0.001, 0),
}  # fmt: skip


@pytest.fixture(scope="module")
def keras():
    import tf_keras  # ~8 s, once per module

    return tf_keras


def test_arm_names_and_param_counts():
    assert {name: arm.param_count() for name, arm in ARMS.items()} == EXPECTED_PARAMS
    assert list(ARMS) == list(EXPECTED_PARAMS)  # registry order is the tutorial's order


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_built_model_matches_arm(keras, name):
    arm = ARMS[name]
    model = build_model(arm, keras)
    assert model.count_params() == arm.param_count() == EXPECTED_PARAMS[name]

    l1, l2, rate = EXPECTED_REGULARIZATION[name]
    *body, out = model.layers
    dense = [layer for layer in body if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == list(arm.hidden)
    if rate:  # a Dropout of `rate` right after each hidden Dense
        assert [type(layer) for layer in body] == [keras.layers.Dense, keras.layers.Dropout] * len(arm.hidden)
        assert [layer.rate for layer in body[1::2]] == [rate] * len(arm.hidden)
    else:
        assert body == dense
    for layer in dense:
        assert layer.activation.__name__ == "elu"
        if l1 or l2:
            config = layer.kernel_regularizer.get_config()
            assert (config.get("l1", 0), config.get("l2", 0)) == (pytest.approx(l1), pytest.approx(l2))
        else:
            assert layer.kernel_regularizer is None

    # logits: Dense(1), no activation, no penalty
    assert isinstance(out, keras.layers.Dense) and out.units == 1
    assert out.activation.__name__ == "linear"
    assert out.kernel_regularizer is None


@pytest.mark.parametrize("names", [None, []])
def test_get_arms_defaults_to_the_tutorials_seven(names):
    assert [a.name for a in get_arms(names)] == list(TUTORIAL_PARAMS)


def test_study_arm_from_layers_and_units():
    arm = make_arm("wide", {"layers": 2, "units": 256, "activation": "relu", "l1": 1e-4, "dropout": 0.2})
    assert arm == Arm("wide", (256, 256), dropout=0.2, activation="relu", l1=1e-4)
    assert make_arm("mine", {"hidden": [32, 8]}).param_count() == 28 * 32 + 32 + 32 * 8 + 8 + 9


def test_study_arms_are_found_by_name():
    extra = {"wide": make_arm("wide", {"hidden": [8]})}
    assert [a.name for a in get_arms(["wide", "tiny"], extra)] == ["wide", "tiny"]


@pytest.mark.parametrize(
    "spec, problem",
    [({"hidden": [16], "units": 3, "colour": 1}, "unknown key 'colour'"),
     ({"units": 16}, "give `hidden = [units, ...]` or both `layers` and `units`"),
     ({"hidden": [16, 0]}, "hidden layers must be a non-empty list of positive whole numbers"),
     ({"hidden": [16], "activation": "wiggle"}, "activation 'wiggle' is not one of"),
     ({"hidden": [16], "dropout": 1.0}, "dropout must be a number in [0, 1)"),
     ({"hidden": [16], "l2": -1}, "l2 must be a number >= 0")],
)  # fmt: skip
def test_bad_study_arm(spec, problem):
    with pytest.raises(UsageError, match=re.escape(f"study.toml, arm 'x': {problem}")):
        make_arm("x", spec, where="study.toml")


def test_get_arms_keeps_given_order():
    assert [a.name for a in get_arms(["l2", "tiny"])] == ["l2", "tiny"]


def test_get_arms_unknown_name():
    with pytest.raises(UsageError, match="'bogus'"):
        get_arms(["tiny", "bogus"])


def test_get_arms_duplicate_name():
    with pytest.raises(UsageError, match="twice.*tiny"):
        get_arms(["tiny", "small", "tiny"])


# --- splits -----------------------------------------------------------------------------------


def test_default_n_test_is_uci_test_set_when_file_has_room():
    rows = resolve_splits(Splits(), total=11_000_000)
    assert rows == SplitRows(total=11_000_000, n_validation=1_000, n_train=10_000, n_test=500_000)


def test_default_n_test_is_the_rest_when_file_is_small():
    rows = resolve_splits(Splits(n_validation=100, n_train=400), total=10_984)
    assert rows.n_test == 10_984 - 500


def test_default_n_test_is_zero_when_file_is_exactly_full():
    assert resolve_splits(Splits(n_validation=100, n_train=400), total=500).n_test == 0


def test_explicit_n_test_is_kept():
    assert resolve_splits(Splits(100, 400, n_test=1_000), total=10_984).n_test == 1_000


def test_explicit_n_test_too_large():
    with pytest.raises(UsageError, match=r"data\.csv has 10,984 rows.*= 11,500"):
        resolve_splits(Splits(100, 400, n_test=11_000), total=10_984, source="data.csv")


def test_train_too_large_for_file():
    with pytest.raises(UsageError, match="10,984 rows"):
        resolve_splits(Splits(n_validation=1_000, n_train=20_000), total=10_984)


def test_n_train_all_is_every_row_between_validation_and_uci_test_rows():
    rows = resolve_splits(Splits(n_train=None), total=11_000_000)
    assert (rows.n_validation, rows.n_train, rows.n_test) == (1_000, 10_499_000, 500_000)


def test_n_train_all_on_a_small_file_leaves_no_test_rows_unless_asked():
    assert resolve_splits(Splits(n_train=None), total=10_984).n_train == 9_984
    rows = resolve_splits(Splits(n_train=None, n_test=984), total=10_984)
    assert (rows.n_train, rows.n_test) == (9_000, 984)


def test_n_train_all_with_nothing_left():
    with pytest.raises(UsageError, match="none left to train on"):
        resolve_splits(Splits(n_validation=1_000, n_train=None, n_test=9_984), total=10_984)


def test_resolved_splits_are_row_ranges_of_the_file():
    from raypkg.shards import shard_ranges

    rows = resolve_splits(Splits(n_validation=100, n_train=400, n_test=1_000), total=10_984)
    r = shard_ranges(rows, [400], workers=1)
    assert (r["validation_0"], r["train_n400_0"], r["test_0"]) == ((0, 100), (100, 500), (9_984, 10_984))
    big = resolve_splits(Splits(), total=11_000_000)  # the tutorial's splits of the full file, UCI's test rows
    r = shard_ranges(big, [big.n_train], workers=1)
    assert (r["validation_0"], r["train_n10000_0"], r["test_0"]) == ((0, 1_000), (1_000, 11_000),
                                                                     (10_500_000, 11_000_000))  # fmt: skip


@pytest.mark.parametrize(
    "splits, flag",
    [
        (Splits(n_validation=0), "--n-validation"),
        (Splits(n_train=0), "--n-train"),
        (Splits(n_validation=-5), "--n-validation"),
        (Splits(n_train=-1), "--n-train"),
        (Splits(n_test=-1), "--n-test"),
    ],
)
def test_nonpositive_sizes_raise(splits, flag):
    with pytest.raises(UsageError, match=flag):
        resolve_splits(splits, total=11_000_000)


def test_cli_default_for_the_shipped_sample_fits_it():
    from raypkg.cli import SAMPLE_N_TRAIN
    from raypkg.sweep import check_request

    rows = check_request(SweepConfig(data=sample_path(), splits=Splits(n_train=SAMPLE_N_TRAIN)))
    assert (rows.total, rows.n_validation, rows.n_train, rows.n_test) == (10_984, 1_000, 9_000, 984)


# --- check_higgs ------------------------------------------------------------------------------

FORMAT = "expected no header and 29 comma-separated numbers"


@pytest.fixture(scope="module")
def real_lines() -> list[str]:
    """The first 50 rows of the shipped sample, each with its newline."""
    with gzip.open(sample_path(), "rt") as f:
        return [next(f) for _ in range(50)]


def with_row(lines: list[str], line: int, edit) -> str:
    """The text of `lines`, with the fields of 1-based `line` replaced by edit(fields)."""
    lines = list(lines)
    fields = lines[line - 1].rstrip("\n").split(",")
    lines[line - 1] = ",".join(edit(fields)) + "\n"
    return "".join(lines)


def write(path: Path, text: str, gz: bool = False) -> str:
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return str(path)


def test_shipped_sample_is_valid():
    assert check_higgs(sample_path()) == 10_984


def test_good_plain_csv(tmp_path, real_lines):
    assert check_higgs(write(tmp_path / "ok.csv", "".join(real_lines))) == 50


def test_good_csv_gz(tmp_path, real_lines):
    assert check_higgs(write(tmp_path / "ok.csv.gz", "".join(real_lines), gz=True)) == 50


def test_gzip_detected_by_content_not_name(tmp_path, real_lines):
    path = write(tmp_path / "looks_plain.csv", "".join(real_lines), gz=True)
    assert check_higgs(path) == 50


def set_field(col: int, value: str):
    return lambda fields: fields[:col] + [value] + fields[col + 1 :]


BAD_ROWS = {  # name: (edit of line 10's fields, expected problem)
    "28 columns": (lambda f: f[:-1], "line 10: 28 columns instead of 29"),
    "30 columns": (lambda f: f + ["0.5"], "line 10: 30 columns instead of 29"),
    "text": (set_field(5, "abc"), "line 10: 'abc' in column 5 is not a number"),
    "nan": (set_field(7, "nan"), "line 10: 'nan' in column 7 is not a finite number"),
    "inf": (set_field(7, "inf"), "line 10: 'inf' in column 7 is not a finite number"),
    "label 2": (set_field(0, "2"), "line 10: label '2' is not 0 or 1"),
    "underscore": (set_field(3, "1_0"), "line 10: '1_0' in column 3 is not a number"),
    "blank line": (lambda f: [""], "line 10: 1 columns instead of 29"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_named_by_line(tmp_path, real_lines, case):
    edit, problem = BAD_ROWS[case]
    path = write(tmp_path / "bad.csv", with_row(real_lines, 10, edit))
    with pytest.raises(UsageError) as e:
        check_higgs(path)
    assert f"{path}, {problem}" in str(e.value)
    assert FORMAT in str(e.value)


def test_header_row(tmp_path, real_lines):
    header = ",".join(["label", *(f"f{i}" for i in range(28))]) + "\n"
    path = write(tmp_path / "header.csv", header + "".join(real_lines))
    with pytest.raises(UsageError, match=r"line 1: a header row\? 'label' in column 0 is not a number"):
        check_higgs(path)


def test_bad_row_after_the_first_block(tmp_path):
    """A bad row deep in a gzip file still gets its own line number."""
    with gzip.open(sample_path(), "rt") as f:
        lines = f.readlines() * 2  # 21,968 rows, ~6.5 MB
    path = write(tmp_path / "big.csv.gz", with_row(lines, 20_000, set_field(0, "2")), gz=True)
    with pytest.raises(UsageError, match=r"line 20,000: label '2' is not 0 or 1"):
        check_higgs(path)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(UsageError, match=f"{re.escape(path)} is empty"):
        check_higgs(path)


def test_empty_gzip(tmp_path):
    with pytest.raises(UsageError, match="has no rows"):
        check_higgs(write(tmp_path / "empty.csv.gz", "", gz=True))


def test_truncated_gzip(tmp_path):
    data = Path(sample_path()).read_bytes()
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError) as e:
        check_higgs(str(path))
    match = re.search(r"gzip stream is cut short or corrupt after line ([\d,]+)", str(e.value))
    assert match, str(e.value)
    assert 0 < int(match[1].replace(",", "")) < 10_984
    assert "fetch the file again" in str(e.value)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.csv")
    with pytest.raises(UsageError, match=f"data file not found: {re.escape(path)}"):
        check_higgs(path)


def test_directory(tmp_path):
    with pytest.raises(UsageError, match=f"{re.escape(str(tmp_path))} is a directory"):
        check_higgs(str(tmp_path))


# --- results ----------------------------------------------------------------------------------

DONE = {
    "trial": "tiny-n9000-s0", "arm": "tiny", "n_train": 9_000, "seed": 0, "status": "done", "params": 481,
    "workers": 2, "epochs": 1234, "best_epoch": 1034, "min_val_binary_crossentropy": 0.61234,
    "binary_crossentropy_at_best": 0.59871, "val_accuracy_at_best": 0.6667, "val_auc_at_best": 0.7321,
    "final_val_binary_crossentropy": 0.6201, "test_binary_crossentropy": 0.6188, "test_auc": 0.7311,
    "wall_s": 95.6, "stopped_by": "patience",
}  # fmt: skip
FAILED = {"trial": "large-n9000-s0", "arm": "large", "n_train": 9_000, "seed": 0, "status": "failed",
          "params": 803_329, "error": "RuntimeError: out of memory"}  # fmt: skip


def test_format_table():
    lines = format_rows([DONE, FAILED], "table").splitlines()
    header, rule, done, failed, error = lines
    assert header.split()[:3] == ["trial", "status", "params"]
    assert "min val BCE" in header and "test AUC" in header
    assert set(rule) == {"-", " "}
    assert len(header) == len(rule) == len(done) == len(failed)  # columns line up
    assert done.split() == ["tiny-n9000-s0", "done", "481", "2", "1234", "1034", "0.6123", "0.5987", "0.667",
                            "0.732", "0.6201", "0.6188", "0.731", "96", "patience"]  # fmt: skip
    assert failed.split() == ["large-n9000-s0", "failed", "803,329"] + ["-"] * 12
    assert error == "large-n9000-s0: RuntimeError: out of memory"


def test_format_csv():
    text = format_rows([DONE, FAILED], "csv")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames[:3] == ["trial", "status", "params"] and reader.fieldnames[-1] == "error"
    done, failed = list(reader)
    assert done["min_val_binary_crossentropy"] == "0.61234" and done["error"] == ""
    assert (done["arm"], done["n_train"], done["seed"]) == ("tiny", "9000", "0")
    assert failed["status"] == "failed" and failed["error"] == FAILED["error"]
    assert failed["epochs"] == ""


def test_format_json():
    assert json.loads(format_rows([DONE, FAILED], "json")) == [DONE, FAILED]


def test_format_unknown():
    with pytest.raises(UsageError, match="'xml'"):
        format_rows([DONE], "xml")
    with pytest.raises(UsageError, match="unknown --by 'arm'"):
        format_rows([DONE], "table", by="arm")


def seed_of(row: dict, seed: int, **values) -> dict:
    return {**row, "trial": row["trial"].replace("-s0", f"-s{seed}"), "seed": seed, **values}


def test_groups_are_mean_and_sd_over_finished_seeds():
    rows = [DONE, seed_of(DONE, 1, min_val_binary_crossentropy=0.63234, best_epoch=1000, test_auc=0.7211),
            seed_of(DONE, 2, status="failed", min_val_binary_crossentropy=0.9), FAILED]  # fmt: skip
    tiny, large = json.loads(format_rows(rows, "json", by="group"))
    assert (tiny["arm"], tiny["n_train"], tiny["seeds"], tiny["seeds_total"]) == ("tiny", 9_000, 2, 3)
    assert tiny["status"] == "2 done 1 failed"
    assert tiny["min_val_binary_crossentropy_mean"] == pytest.approx(0.62234)
    assert tiny["min_val_binary_crossentropy_sd"] == pytest.approx(0.01414, abs=1e-5)  # sample sd of 2 values
    assert tiny["best_epoch_mean"] == 1017 and tiny["test_auc_mean"] == pytest.approx(0.7261)
    assert (large["seeds"], large["status"], large["min_val_binary_crossentropy_mean"]) == (0, "failed", None)


def test_group_table_has_a_row_per_arm_and_size():
    rows = [DONE, seed_of(DONE, 1), {**DONE, "trial": "tiny-n500-s0", "n_train": 500}]
    header, _rule, *body = format_rows(rows, "table", by="group").splitlines()
    assert header.split()[:5] == ["arm", "train", "rows", "seeds", "status"]
    assert [line.split()[:3] for line in body] == [["tiny", "9,000", "2"], ["tiny", "500", "1"]]


def test_load_rows_needs_sweep_json(tmp_path):
    (tmp_path / "arms").mkdir()
    with pytest.raises(UsageError, match="not a raypkg run directory.*sweep.json"):
        load_rows(str(tmp_path))


@pytest.mark.parametrize(
    "change, flag",
    [({"train": TrainConfig(report_every=0)}, "--report-every"),
     ({"train": TrainConfig(patience=0)}, "--patience"),
     ({"train": TrainConfig(in_memory_rows=-1)}, "--in-memory-rows must be 0"),
     ({"asha": AshaConfig(grace_period=0)}, "--grace-period must be at least 1"),
     ({"asha": AshaConfig(reduction_factor=1)}, "--reduction-factor must be more than 1"),
     ({"scheduler": "pbt"}, "unknown --scheduler 'pbt'"),
     ({"seeds": 0}, "--seeds must be at least 1"),
     ({"resources": ResourcesConfig(workers=3)}, "does not split evenly over --workers 3")],
)  # fmt: skip
def test_check_request_refuses_impossible_settings(change, flag):
    from raypkg.sweep import check_request

    with pytest.raises(UsageError, match=flag):
        check_request(SweepConfig(data=sample_path(), splits=Splits(n_train=9_000), **change))


def test_concatenated_gzip_members_are_one_file(tmp_path):
    """gzip files may hold several members (e.g. `cat a.gz b.gz`); a member may end mid-line."""
    with gzip.open(sample_path(), "rb") as f:
        text = f.read()
    path = tmp_path / "two.csv.gz"
    path.write_bytes(gzip.compress(text[:500_000]) + gzip.compress(text[500_000:]))
    assert check_higgs(str(path)) == 10_984


# --- study files --------------------------------------------------------------------------------

STUDIES = Path(__file__).resolve().parents[1] / "jobs" / "studies"


def study_config(text: str, tmp_path: Path, **flags):
    from raypkg.study import build_config, load_study

    path = tmp_path / "study.toml"
    path.write_text(text)
    return build_config({"data": "d.csv", **load_study(str(path)), **flags}, where=str(path))


@pytest.mark.parametrize("name", ["tutorial", "full_scale", "data_size"])
def test_shipped_studies_load(name):
    from raypkg.study import build_config, load_study

    cfg = build_config({"data": "d.csv", **load_study(str(STUDIES / f"{name}.toml"))})
    assert get_arms(list(cfg.arms))  # every arm it names exists


def test_tutorial_study_is_the_defaults():
    from raypkg.study import build_config, load_study

    cfg = build_config({"data": "d.csv", **load_study(str(STUDIES / "tutorial.toml"))})
    assert (cfg.train, cfg.resources, cfg.splits) == (TrainConfig(), ResourcesConfig(), Splits())
    assert cfg.arms == tuple(TUTORIAL_PARAMS) and cfg.train_sizes == (10_000,) and cfg.seeds == 1


def test_flags_override_the_study(tmp_path):
    text = 'arms = ["tiny"]\nseeds = 3\ntrain_sizes = [1000, "all"]\n[train]\nmax_epochs = 50\n[resources]\nworkers = 2\n'
    cfg = study_config(text, tmp_path, max_epochs=7, seeds=1)
    assert (cfg.train.max_epochs, cfg.seeds, cfg.resources.workers) == (7, 1, 2)
    assert cfg.train_sizes == (1_000, None) and cfg.splits.n_train is None  # "all": the whole train split


def test_study_numbers_may_be_whole_where_any_number_goes(tmp_path):
    cfg = study_config("[train]\nlearning_rate = 1\n[resources]\ngpus_per_worker = 0.5\n", tmp_path)
    assert (cfg.train.learning_rate, cfg.resources.gpus_per_worker) == (1, 0.5)


def test_study_sets_asha_and_flags_override_it(tmp_path):
    cfg = study_config('scheduler = "asha"\n[asha]\ngrace_period = 20\nreduction_factor = 2\n', tmp_path,
                       grace_period=5)  # fmt: skip
    assert (cfg.scheduler, cfg.asha) == ("asha", AshaConfig(grace_period=5, reduction_factor=2))
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg


def test_study_defines_its_own_arms(tmp_path):
    cfg = study_config('arms = ["wide", "tiny"]\n[arm.wide]\nlayers = 2\nunits = 64\ndropout = 0.1\n', tmp_path)
    (wide,) = cfg.custom_arms
    assert wide == {"name": "wide", "hidden": (64, 64), "l2": 0.0, "dropout": 0.1, "activation": "elu", "l1": 0.0}


@pytest.mark.parametrize(
    "text, problem",
    [("colour = 1\n", "unknown setting 'colour'"),
     ("[train]\nepochs = 5\n", "unknown setting 'epochs' in [train]"),
     ("[train]\nmax_epochs = 'ten'\n", "max_epochs must be a whole number (got 'ten')"),
     ("seeds = 1.5\n", "seeds must be a whole number"),
     ("n_validation = 'x'\n", "n_validation must be a whole number"),
     ("[train]\njit_compile = 1\n", "jit_compile must be true or false"),
     ("train_sizes = [0]\n", "train size 0 must be a whole number of rows >= 1 or 'all'"),
     ("[arm.w]\nhidden = []\n", "arm 'w': hidden layers must be a non-empty list"),
     ("arms = [\n", "is not a readable TOML study file")],
)  # fmt: skip
def test_bad_study_is_one_clear_error(tmp_path, text, problem):
    with pytest.raises(UsageError, match=re.escape(problem)):
        study_config(text, tmp_path)


# --- compare ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "difference, low, high, better, expected",
    [(-0.02, -0.03, -0.01, "lower", "large better"),   # A's BCE is lower: A better
     (-0.02, -0.03, -0.01, "higher", "tiny better"),   # A's AUC is lower: B better
     (0.01, -0.01, 0.03, "lower", "no significant difference")],
)  # fmt: skip
def test_verdict_reads_the_interval(difference, low, high, better, expected):
    from raypkg.compare import verdict

    row = {"a": "large", "b": "tiny", "difference": difference, "ci_low": low, "ci_high": high}
    assert verdict(row, better) == expected


# --- asha ---------------------------------------------------------------------------------------


def test_rungs_grow_by_the_reduction_factor_below_max_epochs():
    assert rung_epochs(AshaConfig(grace_period=100, reduction_factor=3), 10_000) == [100, 300, 900, 2700, 8100]
    assert rung_epochs(AshaConfig(grace_period=2, reduction_factor=1.5), 10) == [2, 3, 4, 7]  # rounded, distinct
    assert rung_epochs(AshaConfig(grace_period=50, reduction_factor=3), 50) == []  # a trial never gets there


def test_first_trial_at_a_rung_continues_then_only_the_best_third():
    rungs = Rungs(AshaConfig(grace_period=4, reduction_factor=3), 100)
    assert rungs.decide("a", 4, 0.60) == {"epoch": 4, "value": 0.60, "cutoff": None, "rivals": 0, "continue": True}
    assert not rungs.decide("b", 4, 0.61)["continue"]  # worse than the only rival
    assert rungs.decide("c", 4, 0.59)["continue"]
    third = rungs.decide("d", 4, 0.605)  # rivals 0.59, 0.60, 0.61: cutoff at their 33rd percentile
    assert third["cutoff"] == pytest.approx(0.5966667, abs=1e-6) and not third["continue"]
    assert rungs.decide("b", 4, 0.50)["continue"] is False  # asked again (a restarted worker): the first answer


def test_rungs_match_tunes_asha_cutoff():
    """Same verdicts as Tune's ASHAScheduler bracket for a sequence of trials (min mode)."""
    from types import SimpleNamespace

    from ray.tune.schedulers.async_hyperband import _Bracket

    values = [0.64, 0.66, 0.62, 0.65, 0.61, 0.67, 0.63]
    ours = Rungs(AshaConfig(grace_period=1, reduction_factor=3), 10)
    tune = _Bracket(min_t=1, max_t=10, reduction_factor=3, s=0)
    for i, v in enumerate(values):
        expected = tune.on_result(SimpleNamespace(trial_id=f"t{i}"), 1, -v)  # Tune maximizes: min mode negates
        assert ours.decide(f"t{i}", 1, v)["continue"] == (expected == "CONTINUE"), (i, v)


def test_replayed_history_counts_rungs_passed_but_not_the_last_epoch():
    rungs = Rungs(AshaConfig(grace_period=2, reduction_factor=2), 100)  # rungs 2, 4, 8, ...
    rungs.replay("a", [0.7, 0.65, 0.66, 0.64])  # 4 epochs: went past rung 2, stopped at rung 4 unasked
    assert rungs.recorded[2] == {"a": 0.65} and rungs.recorded[4] == {}
    assert rungs.decide("a", 2, 0.9)["continue"]


# --- the Train backend ---------------------------------------------------------------------------


def test_tf_config_is_the_one_rays_tensorflow_backend_sets(monkeypatch):
    from ray.train.tensorflow.config import _setup_tensorflow_environment

    from raypkg.backend import set_tf_config

    addresses = ["10.0.0.1:1234", "10.0.0.2:1234"]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _setup_tensorflow_environment(addresses, 1)
    rays = os.environ["TF_CONFIG"], os.environ["TF_USE_LEGACY_KERAS"]
    monkeypatch.delenv("TF_CONFIG")
    set_tf_config(addresses, 1)
    assert (os.environ["TF_CONFIG"], os.environ["TF_USE_LEGACY_KERAS"]) == rays


def test_the_trial_driver_does_not_import_tensorflow():
    """TensorFlow costs ~5 s per process: only Train workers may import it (raypkg/backend.py)."""
    import subprocess
    import sys

    code = ("import sys, raypkg.sweep, raypkg.backend; from raypkg.sweep import train_arm, train_worker; "
            "print('tensorflow' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- shards --------------------------------------------------------------------------------------


def test_shards_are_equal_contiguous_parts_of_each_split():
    from raypkg.shards import shard_ranges

    ranges = shard_ranges(SplitRows(total=10_000, n_validation=1_001, n_train=6_000, n_test=2_000), [999, 6_000], 2)
    assert ranges == {
        "validation_0": (0, 500), "validation_1": (500, 1_000),  # 1,001 rows: one left out
        "train_n999_0": (1_001, 1_500), "train_n999_1": (1_500, 1_999),  # each size: the first train rows
        "train_n6000_0": (1_001, 4_001), "train_n6000_1": (4_001, 7_001),
        "test_0": (8_000, 9_000), "test_1": (9_000, 10_000),  # the file's last rows
    }  # fmt: skip


def test_no_test_split_gives_empty_test_shards():
    from raypkg.shards import shard_ranges

    ranges = shard_ranges(SplitRows(total=3_000, n_validation=1_000, n_train=2_000, n_test=0), [2_000], 1)
    assert ranges["test_0"] == (3_000, 3_000) and ranges["train_n2000_0"] == (1_000, 3_000)


def test_arrays_keep_row_order_across_blocks():
    import numpy as np
    import pyarrow as pa

    from raypkg.data import COLUMNS
    from raypkg.shards import to_arrays

    rows = np.arange(5 * len(COLUMNS), dtype=np.float32).reshape(5, -1)
    tables = [pa.table({c: rows[a:b, i] for i, c in enumerate(COLUMNS)}) for a, b in ((0, 2), (2, 2), (2, 5))]
    x, y = to_arrays(tables)
    np.testing.assert_array_equal(np.column_stack([y, x]), rows)
    assert x.dtype == y.dtype == np.float32 and y.shape == (5, 1)


def test_batches_visit_every_row_once_per_epoch_in_a_new_order():
    import numpy as np

    from raypkg.train import batches

    x = np.arange(1_003 * 28, dtype=np.float32).reshape(1_003, 28)
    y = np.arange(1_003, dtype=np.float32).reshape(-1, 1)
    stream = iter(batches(x, y, 100, shuffle_seed=5))
    epochs = [[next(stream) for _ in range(11)] for _ in range(2)]  # ceil(1,003 / 100) batches each
    labels = [np.concatenate([b[1].numpy() for b in epoch]).ravel() for epoch in epochs]
    for epoch, order in zip(epochs, labels):
        assert sorted(order) == list(range(1_003)) and len(epoch[-1][1]) == 3  # each row once, a short last batch
        np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in epoch]), x[order.astype(int)])
    assert (labels[0] != labels[1]).any()  # reshuffled each epoch
    np.testing.assert_array_equal(next(iter(batches(x, y, 100, shuffle_seed=5)))[1], epochs[0][0][1])  # same seed
    in_order = iter(batches(x, y, 100))
    np.testing.assert_array_equal(np.concatenate([next(in_order)[1] for _ in range(11)]).ravel(), np.arange(1_003))
