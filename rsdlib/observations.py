"""What a policy observes: the names every layer uses for cameras and proprioception.

LIBERO's two cameras (third person and wrist) come out of the harness as ``(S, S, 3)`` uint8
images under :data:`CAMERA_KEYS`, upright; ``proprio`` is :data:`PROPRIO_DIM` numbers (end-effector
position, axis-angle orientation, the two gripper fingers).
"""

#: robosuite's camera names and the observation keys their images come under.
CAMERAS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}
#: Camera images in the order policies stack them (a one-camera policy reads the first).
CAMERA_KEYS = tuple(CAMERAS.values())
#: Proprioception: eef position (3), axis-angle (3), gripper finger positions (2).
PROPRIO_DIM = 8
