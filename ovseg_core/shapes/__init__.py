"""ShapesWorld: a procedural open-vocabulary world in which every model trains on a CPU.

``generate_scene(seed)`` draws a scene with COCO-panoptic ground truth and a caption;
``load_classes()`` gives the classes and their seen/unseen split (``split.json``);
``variant_scene(seed)`` draws it in one of the ``LAYOUT_VARIANTS`` (evaluation only);
``render_depth(scene)`` gives it a registered depth image with known 3D truth;
``python -m ovseg_core.shapes dataset|stream`` writes datasets and camera streams.
"""
from .world import (EXTRA_HUES, LAYOUT_VARIANTS, Scene, ShapesClasses, camera_pan, describe_layout, generate_scene,
                    layout_scene, load_classes, render_depth, repaint_extra_hue, repaint_for_training,
                    repaint_off_palette, single_object_view, variant_scene)

__all__ = ["EXTRA_HUES", "LAYOUT_VARIANTS", "Scene", "ShapesClasses", "camera_pan", "describe_layout", "generate_scene",
           "layout_scene", "load_classes", "render_depth", "repaint_extra_hue", "repaint_for_training",
           "repaint_off_palette", "single_object_view", "variant_scene"]
