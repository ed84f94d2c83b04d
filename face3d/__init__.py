"""3D face fitting: MediaPipe Face Mesh fits, head pose, landmarks and fit files.

Conventions used everywhere in this project (see README, "Fit files"):

* Image coordinates are continuous pixels: x to the right, y down, the image's
  top-left corner at (0, 0), so pixel (row i, col j) has its centre at
  (j + 0.5, i + 0.5).
* Depth z is in the same pixel scale and grows AWAY from the camera (smaller z
  is nearer). Together, (x, y, z) is the OpenCV camera frame.
* Head pose (degrees): yaw > 0 turns the face toward the image's right (the
  subject's left), pitch > 0 tilts the face up, roll > 0 turns it clockwise in
  the image.
"""
