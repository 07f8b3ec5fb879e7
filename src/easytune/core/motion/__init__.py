"""Motion formats: what a motion is on disk and as features.

- :mod:`.skeleton`: skeleton constants (HumanML3D 22 joints, KIT-ML 21), kinematic chains, template offsets;
- :mod:`.quaternion`: the quaternion helpers of the HumanML3D feature code;
- :mod:`.features`: joints <-> the 263-d (251-d KIT) features, canonicalisation, retargeting;
- :mod:`.captions`: HumanML3D caption files (``caption#tokens#start#end``);
- :mod:`.sources`: dataset folders (HumanML3D/KIT layouts, joints folders) read into clips with counted skips;
- :mod:`.bvh`: BVH reading (and writing), forward kinematics, mapping to the 22 HumanML3D joints;
- :mod:`.ingest`: a folder of BVH files -> the joints-folder layout;
- :mod:`.synthetic`: the embedded default dataset (procedural skeleton motion).
"""
