"""SMPL tools: the synthetic test model, keypoint readers, priors and fitting (the model itself is
``recon.engine.models.smpl.SMPL``; skinning is ``recon.engine.models.lbs``)."""
from recon.engine.smpl.fit import FitConfig, FitResult, PinholeCamera, fit_joints3d, fit_keypoints2d, fit_scan

__all__ = ["FitConfig", "FitResult", "PinholeCamera", "fit_joints3d", "fit_keypoints2d", "fit_scan"]
