"""ShapesWorld: a procedural open-vocabulary world in which every model trains on a CPU.

``generate_scene(seed)`` draws a scene with COCO-panoptic ground truth and a caption;
``load_classes()`` gives the classes and their seen/unseen split (``split.json``);
``python -m ovseg_core.shapes dataset|stream`` writes datasets and camera streams.
"""
from .world import Scene, ShapesClasses, camera_pan, generate_scene, load_classes, single_object_view

__all__ = ["Scene", "ShapesClasses", "camera_pan", "generate_scene", "load_classes", "single_object_view"]
