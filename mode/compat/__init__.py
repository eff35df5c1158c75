"""Compatibility layers for code written against other Momentum ResNet packages.

``import mode.compat.momentumnet as momentumnet`` gives the API of the official package
(``momentumnet`` 0.10: ``MomentumNet``, ``transform_to_momentumnet``) running on this library, and
:func:`mode.compat.momentumnet.convert_state_dict` loads its checkpoints.
"""
