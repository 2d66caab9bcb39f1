"""What a policy observes: the names every layer uses for cameras, proprioception and objects.

LIBERO's two cameras (third person and wrist) come out of the harness as ``(S, S, 3)`` uint8
images under :data:`CAMERA_KEYS`, upright; ``proprio`` is :data:`PROPRIO_DIM` numbers (end-effector
position, axis-angle orientation, the two gripper fingers); ``objects`` is one row of
:data:`OBJECT_FEATURES` per task object or fixture, with their kinds under ``object_kinds``.

A policy reads one of two *modalities* (:data:`MODALITIES`): ``rgb`` (the cameras, as the VLAs
this workbench is about see the world) or ``lowdim`` (the object rows, as robomimic's low_dim
datasets); both add the instruction and proprioception.
"""

#: robosuite's camera names and the observation keys their images come under.
CAMERAS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}
#: Camera images in the order policies stack them (a one-camera policy reads the first).
CAMERA_KEYS = tuple(CAMERAS.values())
#: Proprioception: eef position (3), axis-angle (3), gripper finger positions (2).
PROPRIO_DIM = 8
#: One object row: world position, orientation quaternion (w first, w >= 0), and the positions
#: of up to three of its own joints (drawers, knobs; zeros where it has fewer).
OBJECT_FEATURES = ("x", "y", "z", "qw", "qx", "qy", "qz", "joint_0", "joint_1", "joint_2")
OBJECT_DIM = len(OBJECT_FEATURES)
MODALITIES = ("rgb", "lowdim")
