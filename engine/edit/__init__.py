"""Editing Gaussian scenes by 2D masks (GaussianEditor-style semantic tracing and anchor-loss fine-tuning).

* ``masks``: per-view masks from PNG folders (binary, integer labels or one folder per object) or a 3D box;
* ``tracing``: per-Gaussian label weights sum_p w_i(p) M(p) / sum_p w_i(p) and the thresholded selection,
  stored as ``selection.npz``;
* ``ops``: delete, extract, recolor and transform on raw parameter tensors;
* ``anchor``: fine-tuning of the selection toward edited images with the hierarchical anchor loss;
* ``runs``: the run-directory layer behind ``recon edit`` (load a run with its scene, write an edited run).
"""
