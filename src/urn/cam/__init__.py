"""Classification phase (PMM, URN_ALGORITHM.md section 1): CAM classifier, CAMs, pseudo-masks.

Stages, each a module with one ``run`` and explicit artifacts on disk:

- :mod:`urn.cam.train`: ``run(cfg, out, resume) -> checkpoint path`` (``urn cam train``);
- :mod:`urn.cam.infer`: ``run(cfg, checkpoint, split, out, heat_out=None)`` -> ``<id>.npz`` CAMs
  (``urn cam infer``);
- :mod:`urn.cam.make_masks`: ``run(cfg, cams_dir, split, out)`` -> ``<id>.png`` pseudo-masks (``urn pmm``).

Pure pieces: :mod:`urn.cam.network` (``CAMNet``, ``SEAMNet``), :mod:`urn.cam.seam_losses`,
:mod:`urn.cam.pmm` (CVS, PPMG, threshold baselines), :mod:`urn.cam.data` (sampling, tiling).
None of them reads ground-truth masks.
"""
