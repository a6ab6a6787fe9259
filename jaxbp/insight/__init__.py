"""jaxbp.insight: seeing backpropagation happen.

``trace`` (the node-by-node backward pass of a scalar function), ``draw`` (its graph as a picture),
``tables`` (plain-text and Markdown tables, and the examples' checks against the notes), ``expr`` (the
expression language of ``jaxbp trace``), ``cost`` (FLOPs and memory from XLA's analyses) and ``gradflow``
(per-layer gradient norms during training). Each is a module of its own; nothing is re-exported here, so
``import jaxbp.insight.trace`` names the module (``jaxbp.trace`` is the function).
"""
