"""A delta written by the trainer, given to the node's ``weights`` parameter, is what the
node serves: its segments equal the library's with that delta and differ from the
untrained model's (the node in its own process, over real ROS topics)."""
import os

import yaml

from ros_harness import require_ros

require_ros()

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ovseg.msg import PanopticResult  # noqa: E402
from ovseg_core.build import build_segmenter  # noqa: E402
from ovseg_core.shapes.world import generate_scene, load_classes  # noqa: E402
from ovseg_core.training.loop import Trainer  # noqa: E402
from ovseg_core.training.recipe import load_recipe  # noqa: E402
from ovseg_ros.harness import NodeProcess, Probe, isolated_env  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
VOCAB = load_classes().vocabulary_text()


def segments_of(result):
    return [(s.class_name, round(float(s.score), 3), int(s.area)) for s in result.segments]


def test_the_node_serves_a_trained_delta(tmp_path):
    recipe = {"preset": "shapes", "method": "smart",
              "model": {"classifier.sma_layers": [-1], "classifier.distribution_adapter_layers": 2,
                        "classifier.learned_void": True, "classifier.trainable": "query_projection"},
              "data": {"dataset": "shapes", "crop_size": 128, "num_workers": 0},
              "optim": {"lr": 1e-2, "batch_size": 4, "max_iters": 2, "warmup_iters": 1}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    Trainer(load_recipe(str(tmp_path / "recipe.yaml")), run, device="cpu", progress=False).fit()
    preset, delta = str(run / "preset.yaml"), str(run / "delta.safetensors")

    image = generate_scene(778, size=128).image
    tuned = segments_of(build_segmenter(preset, weights=delta, device="cpu")(image, VOCAB))
    plain = segments_of(build_segmenter(preset, device="cpu")(image, VOCAB))
    assert tuned != plain, "the delta does not change the library's output"

    os.environ.update(isolated_env())
    node = NodeProcess(tmp_path, preset=preset, weights=delta, device="cpu", seed=0, cameras=["/cam/image_raw"],
                       input_qos="reliable", vocabulary=VOCAB, status_period=0.2)
    probe = Probe()
    try:
        pub = probe.node.create_publisher(Image, "/cam/image_raw", RELIABLE)
        probe.subscribe(PanopticResult, "/ovseg/cam/panoptic", RELIABLE)
        msg = Image(height=128, width=128, encoding="rgb8", step=128 * 3, data=image.tobytes())
        msg.header.frame_id = "cam"

        def answered():
            pub.publish(msg)
            return probe.messages("/ovseg/cam/panoptic")
        probe.wait_for(answered, timeout=180, what="a result from the node", node=node)
        served = segments_of(probe.messages("/ovseg/cam/panoptic")[0])
        assert served == tuned
    finally:
        probe.close()
        node.stop()
