"""Fuzz (hypothesis) of the PQ CLI: random corruptions of a valid GT/prediction pair
give either a correct result (exit 0, standard JSON, every number in range) or one
line naming the file with exit 2; never a traceback, never a half-written output."""
import contextlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_corruptions import FUZZ, assert_metrics_in_range, assert_one_line_naming, corrupt_some, fresh_copy, strict_json
from ovseg_core.evaluation import reference
from ovseg_core.evaluation.panoptic import main as pq_main


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pq_valid")
    reference.write_dataset(folder, 2, 12, 16, num_categories=3)
    return folder


@FUZZ
@given(data=st.data())
def test_pq_cli_never_tracebacks(valid, tmp_path_factory, data):
    case = fresh_copy(valid, tmp_path_factory.getbasetemp() / "pq_case")
    files = [case / "gt.json", case / "pred.json"] + sorted((case / "gt").glob("*.png")) + \
        sorted((case / "pred").glob("*.png"))
    done = corrupt_some(data, files)
    out = case / "out" / "pq.json"
    err, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
        code = pq_main(["--gt-json", str(case / "gt.json"), "--gt-dir", str(case / "gt"), "--pred-json",
                        str(case / "pred.json"), "--pred-dir", str(case / "pred"), "--json-out", str(out),
                        "--workers", "1"])
    assert code in (0, 2), done
    if code == 2:
        assert_one_line_naming(err.getvalue(), "error: ", case)
        assert not out.exists(), done
    else:
        result = strict_json(out)
        assert set(result) == {"All", "Things", "Stuff", "per_class"}
        assert_metrics_in_range(result)
