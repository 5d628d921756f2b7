"""Per-stage latency: the timer, what a segmentation call records, `ovseg segment --profile`."""
import time

import numpy as np

from ovseg_core.cli import main
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.profiling import STAGES, StageTimer, stage_table


def test_a_stage_entered_twice_is_summed_and_stages_keep_pipeline_order():
    timer = StageTimer("cpu")
    with timer.stage("merge"):
        time.sleep(0.01)
    with timer.stage("proposals"):
        pass
    with timer.stage("merge"):
        time.sleep(0.01)
    seconds = timer.seconds()
    assert list(seconds) == ["proposals", "merge"]
    assert seconds["merge"] >= 0.02


def test_a_call_records_every_stage(tiny_segmenter):
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    tiny_segmenter(image, "car; road [stuff]")
    timings = tiny_segmenter.last_timings
    assert list(timings) == list(STAGES)
    assert all(t >= 0 for t in timings.values())
    # given masks: no mask generator runs, so no proposals stage
    masks = np.zeros((1, 60, 80), np.uint8)
    masks[0, 10:30, 10:30] = 1
    tiny_segmenter(image, "car; road [stuff]", proposals=OracleProposals()([masks]))
    assert "proposals" not in tiny_segmenter.last_timings and "classifier" in tiny_segmenter.last_timings


def test_stage_table_has_percentiles_per_stage_and_total():
    table = stage_table([{"proposals": 0.010, "merge": 0.002}, {"proposals": 0.030, "merge": 0.004}])
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert list(rows) == ["proposals", "merge", "total"]
    assert float(rows["proposals"][0]) == 20.0 and float(rows["total"][0]) == 23.0
    assert float(rows["merge"][1]) == 3.9


def test_segment_profile_prints_each_stage(tmp_path, street_path, capsys):
    rc = main(["segment", str(street_path), "--vocab", "car; road [stuff]", "--out", str(tmp_path / "out"),
               "--profile", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "street.png: preprocess" in err
    for stage in STAGES + ("total",):
        assert any(line.startswith(stage) for line in err.splitlines()), stage
