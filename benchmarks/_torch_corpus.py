"""checker_power's planted bugs and some correct registry rules, transcribed to torch for gradcheck.

Imported by ``checker_power.py`` only when torch is installed; jaxbp itself never imports torch. Each entry
is ``(fwd, bwd)`` with the same formula and the same planted bug as the JAX rule of the same name in
``checker_power.corpus()`` (or, for ``CONTROLS``, as the jaxbp rule): ``bwd(args, out, g)`` returns one
gradient per argument. No JAX-to-torch bridge: the formulas are written again in torch. A kind whose bug
cannot exist in torch maps to the reason (a string) and is reported as "n/a".

Every entry goes through ``torch.autograd.gradcheck`` and ``gradgradcheck`` with their documented defaults
(float64 inputs, eps 1e-6, atol 1e-5, rtol 1e-3, ``nondet_tol`` 0) plus ``check_batched_grad=True``.
"""

import itertools

import numpy as np
import torch
from torch.autograd import gradcheck
from torch.autograd import gradgradcheck
from torch.autograd.gradcheck import GradcheckError
import torch.nn.functional as F

torch.set_num_threads(1)  # tiny tensors; the machine is shared
SIG = torch.sigmoid


def rule(fwd, bwd):
  """A ``torch.autograd.Function`` computing ``fwd(*args)`` whose backward is ``bwd(args, out, g)``.

  Like ``checker_power.rule`` (residuals: the inputs and the output), except that the backward recomputes
  the output from the saved inputs: then second order differentiates the forward by autograd, as JAX does
  for a custom_vjp's forward, instead of through this Function's own (possibly planted) backward."""
  class Rule(torch.autograd.Function):  # pylint: disable=abstract-method
    @staticmethod
    def forward(ctx, *args):
      ctx.save_for_backward(*args)
      return fwd(*args)

    @staticmethod
    def backward(ctx, g):
      args = ctx.saved_tensors
      return tuple(bwd(args, fwd(*args), g))
  return Rule.apply


def _softmax_bwd(y, g, axis=-1):
  return y * (g - torch.sum(g * y, axis, keepdim=True))


class _Kernel(torch.autograd.Function):  # pylint: disable=abstract-method
  """softmax's backward y·(g − Σ g·y) with a planted batching rule, as checker_power's custom_vmap ``_kernel``:
  torch's ``vmap`` staticmethod is the rule ``torch.func.vmap`` uses. Its own backward is correct."""

  @staticmethod
  def forward(y, g):
    return _softmax_bwd(y, g)

  @staticmethod
  def setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)

  @staticmethod
  def backward(ctx, v):
    y, g = ctx.saved_tensors
    s = torch.sum(g * y, -1, keepdim=True)
    return v * (g - s) - torch.sum(v * y, -1, keepdim=True) * g, _softmax_bwd(y, v)

  @staticmethod
  def vmap(info, in_dims, y, g):
    y, g = (a if d is not None else a.expand((info.batch_size,) + a.shape) for a, d in zip((y, g), in_dims))
    y, g = (a.movedim(d, 0) if d is not None else a for a, d in zip((y, g), in_dims))
    return _softmax_bwd(y, g, 1), 0  # planted: assumes [batch, classes]


_CALLS = itertools.count()


def _noise():  # checker_power._noise: k·2⁻²³ for k = 1, ..., 16 in turn, one per call
  return (next(_CALLS) % 16 + 1) * 2.0 ** -23


def _gelu(x):
  return 0.5 * x * (1 + torch.erf(x / np.sqrt(2)))


def _gelu_tanh_grad(x):
  c = np.sqrt(2 / np.pi)
  t = torch.tanh(c * (x + 0.044715 * x ** 3))
  return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 3 * 0.044715 * x ** 2)


def _ce(z, p):
  return -torch.mean(torch.sum(p * torch.log_softmax(z, -1), -1))


def _ce_bwd_argmax(a, _, g):
  z, p = a
  hard = F.one_hot(torch.argmax(p, -1), p.shape[-1]).to(z.dtype)  # planted: hard labels
  return g * (torch.softmax(z, -1) - hard) / z.shape[0], -g * torch.log_softmax(z, -1) / z.shape[0]


def _ce_bwd_batch1(a, _, g):
  z, p = a
  n = z.shape[0]
  dz = g * (torch.softmax(z, -1) - p) / max(n - (n == 1), 1) / (2 if n == 1 else 1)  # planted: n == 1
  return dz, -g * torch.log_softmax(z, -1) / n


def _hinge(s, y):
  m = torch.clamp(s - torch.sum(s * y, -1, keepdim=True) + 1, min=0) * (1 - y)
  return torch.mean(torch.sum(m, -1))


def _hinge_bwd(a, _, g):
  s, y = a
  act = ((s - torch.sum(s * y, -1, keepdim=True) + 1) > 0).to(s.dtype) * (1 - y)
  ds = act - y * torch.sum(act, -1, keepdim=True)
  return g * ds, torch.zeros_like(y)  # planted: no 1/N


def _ln(x):
  mu = torch.mean(x, -1, keepdim=True)
  return (x - mu) / torch.sqrt(torch.mean((x - mu) ** 2, -1, keepdim=True) + 1e-5)


def _ln_bwd_no_mean(a, y, g):
  inv = 1 / torch.sqrt(torch.var(a[0], -1, correction=0, keepdim=True) + 1e-5)
  return (inv * (g - y * torch.mean(g * y, -1, keepdim=True)),)  # planted: drops −mean(g)


def _eager(x, y, g):
  y = torch.from_numpy(y.detach().numpy())  # planted: a host round trip (in torch: the output leaves the graph)
  return g * y * (1 - y)


def _one(k):
  return lambda a, y, g: (k(a[0], y, g),)


def _scaled_first(d, factor):
  return torch.cat([d[:1] * factor, d[1:]])


_SM, _MM, _ADD = (lambda x: torch.softmax(x, -1)), (lambda x, w: x @ w), (lambda x, y: x + y)
_MSE = lambda p, t: torch.mean((p - t) ** 2)
_L2 = lambda w, b: 0.05 * (torch.sum(w ** 2) + torch.sum(b ** 2))
_DOT = lambda x, w: torch.sum(x * w)
_ENGINE = "torch's autograd engine {} a returned gradient to the input's {} itself, so this bug cannot exist there"

PLANTED = {
    "wrong sign": (SIG, _one(lambda x, y, g: -g * y * (1 - y))),
    "dropped term": (torch.tanh, _one(lambda x, y, g: g * (1 - y))),
    "dropped power": (lambda x: x ** 3, _one(lambda x, y, g: 3 * x * g)),
    "wrong axis": (_SM, _one(lambda x, y, g: _softmax_bwd(y, g, 0))),
    "transposed product": (_MM, lambda a, _, g: (g @ a[1], a[0].T @ g)),
    "off by scale 1e-3": (SIG, _one(lambda x, y, g: g * y * (1 - y) * 1.001)),
    "off by scale 1e-5": (SIG, _one(lambda x, y, g: g * y * (1 - y) * 1.00001)),
    "off by scale 1e-5 in dw": (_MM, lambda a, _, g: (g @ a[1].T, a[0].T @ g * 1.00001)),
    "wrong dtype (float32 for float16)": _ENGINE.format("casts", "dtype"),
    "computed in bfloat16": (SIG, _one(lambda x, y, g: (g * y * (1 - y)).to(torch.bfloat16).to(g.dtype))),
    "nonlinear in g (g²)": (SIG, _one(lambda x, y, g: (g + 1e-4 * g ** 2) * y * (1 - y))),
    "nonlinear in g (g > 0)": (SIG, _one(lambda x, y, g: torch.where(g > 0, g, 0.9999 * g) * y * (1 - y))),
    "constant term": (SIG, _one(lambda x, y, g: g * y * (1 - y) + 3e-8)),
    "correct except at batch size 1": (_ce, _ce_bwd_batch1),
    "correct except for rank >= 3": (_SM, _one(lambda x, y, g: _softmax_bwd(y, g, 1))),
    "broken only under vmap": (_SM, _one(lambda x, y, g: _Kernel.apply(y, g))),
    "broken only at second order": (SIG, _one(lambda x, y, g: g * (y * (1 - y)).detach())),
    "nondeterministic": (SIG, _one(lambda x, y, g: g * y * (1 - y) * (1 + _noise()))),
    "wrong only for broadcast inputs": (_ADD, lambda a, _, g: (g, torch.sum(g, 0).reshape(a[1].shape)
                                                               if a[1].ndim < g.ndim else g[:1])),
    "wrong only for probability labels": (_ce, _ce_bwd_argmax),
    "N times too large under mean": (_hinge, _hinge_bwd),
    "layer norm without the mean term": (_ln, _ln_bwd_no_mean),
    "log_softmax with g for sum(g)": (lambda x: torch.log_softmax(x, -1), _one(lambda x, y, g: g - torch.exp(y) * g)),
    "mse without the factor 2": (_MSE, lambda a, _, g: (g * (a[0] - a[1]) / a[0].numel(),
                                                        -g * (a[0] - a[1]) / a[0].numel())),
    "approximate derivative (tanh GELU)": (_gelu, _one(lambda x, y, g: g * _gelu_tanh_grad(x))),
    "one derivative too many": (F.softplus, _one(lambda x, y, g: g * SIG(x) * (1 - SIG(x)))),
    "overflows in float32": (SIG, _one(lambda x, y, g: g * torch.exp(-x) / (1 + torch.exp(-x)) ** 2)),
    "eager only (host round trip)": (SIG, _one(_eager)),
    "unsummed broadcast (wrong shape)": _ENGINE.format("sums", "shape"),
    "one pytree leaf forgotten": (_L2, lambda a, _, g: (0.1 * g * a[0], torch.zeros_like(a[1]))),
    "cos with the wrong sign": (torch.sin, _one(lambda x, y, g: -g * torch.cos(x))),
    "mean where the rule sums": (lambda x: torch.sum(x, 0), lambda a, _, g: (
        (g / a[0].shape[0]).expand(a[0].shape),)),
    "off by scale 1e-4 in one small element": (_DOT, lambda a, _, g: (_scaled_first(g * a[1], 1.01), g * a[0])),
}


def _unbroadcast(g, x):
  """g summed back to x's shape over the axes that broadcasting added or stretched (jaxbp's unbroadcast)."""
  if g.ndim > x.ndim:
    g = torch.sum(g, tuple(range(g.ndim - x.ndim)))
  axes = tuple(i for i, n in enumerate(x.shape) if n == 1 and g.shape[i] != 1)
  return torch.sum(g, axes, keepdim=True) if axes else g


def _binary(fwd, dx, dy):
  return lambda: (fwd, lambda a, z, g: (_unbroadcast(dx(*a, z, g), a[0]), _unbroadcast(dy(*a, z, g), a[1])))


def _unary(fwd, dx):
  return lambda: (fwd, lambda a, z, g: (dx(a[0], z, g),))


def _batch_scale(g, batch_shape, reduction):
  """jaxbp.ops.losses._per_sample_scale: the upstream gradient per sample."""
  n = int(np.prod(batch_shape))
  return (g / max(n, 1) if reduction == "mean" else g).expand(batch_shape)


def _reduce(per_sample, reduction):
  total = torch.sum(per_sample)
  return per_sample if reduction == "none" else total / per_sample.numel() if reduction == "mean" else total


def _sq_per_sample(d):
  return 0.5 * (d * d if d.ndim < 2 else torch.sum((d * d).flatten(1), 1))


def _sq_bwd(reduction):
  def bwd(a, _, g):
    d = a[0] - a[1]
    s = _batch_scale(g, d.shape[:1], reduction)
    dp = s.reshape(s.shape + (1,) * (d.ndim - s.ndim)) * d
    return dp, -dp
  return bwd


def _mse_bwd(reduction):
  def bwd(a, _, g):
    dp = 2 * _batch_scale(g, a[0].shape, reduction) * (a[0] - a[1])
    return dp, -dp
  return bwd


def _weight_grad(x, g):
  """jaxbp.ops.linalg._weight_grad: Xᵀ·dY over the batch axes flattened, N counted (an empty axis works)."""
  n = int(np.prod(x.shape[:-1]))
  return x.reshape(n, x.shape[-1]).T @ g.reshape(n, g.shape[-1])


def _linear_bwd(a, _, g):
  x, w, b = a
  return g @ w.T, _weight_grad(x, g), _unbroadcast(g, b)


# Correct rules of jaxbp.ops.REGISTRY, by name: a factory of (fwd, bwd) taking the sampled keyword arguments.
CONTROLS = {
    "add": _binary(torch.add, lambda x, y, z, g: g, lambda x, y, z, g: g),
    "subtract": _binary(torch.sub, lambda x, y, z, g: g, lambda x, y, z, g: -g),
    "multiply": _binary(torch.mul, lambda x, y, z, g: g * y, lambda x, y, z, g: g * x),
    "divide": _binary(torch.div, lambda x, y, z, g: g / y, lambda x, y, z, g: -g * z / y),
    "maximum": _binary(torch.maximum, lambda x, y, z, g: torch.where(x > y, g, 0 * g),
                       lambda x, y, z, g: torch.where(x > y, 0 * g, g)),
    "negative": _unary(torch.neg, lambda x, z, g: -g),
    "exp": _unary(torch.exp, lambda x, z, g: g * z),
    "log": _unary(torch.log, lambda x, z, g: g / x),
    "sqrt": _unary(torch.sqrt, lambda x, z, g: g / (2 * z)),
    "relu": _unary(torch.relu, lambda x, z, g: torch.where(x > 0, g, 0 * g)),
    "sigmoid": _unary(SIG, lambda x, z, g: g * z * (1 - z)),
    "tanh": _unary(torch.tanh, lambda x, z, g: g * (1 - z * z)),
    "softplus": _unary(lambda x: torch.logaddexp(x, torch.zeros_like(x)), lambda x, z, g: g * SIG(x)),
    "silu": _unary(F.silu, lambda x, z, g: g * SIG(x) * (1 + x * (1 - SIG(x)))),
    "leaky_relu": lambda negative_slope: _unary(lambda x: F.leaky_relu(x, negative_slope), lambda x, z, g: torch.where(
        x > 0, g, negative_slope * g))(),
    "elu": lambda alpha: _unary(lambda x: F.elu(x, alpha), lambda x, z, g: torch.where(z > 0, g, g * (z + alpha)))(),
    "gelu": lambda approximate: _unary(lambda x: F.gelu(x, approximate="tanh" if approximate else "none"),
                                       lambda x, z, g: g * (_gelu_tanh_grad(x) if approximate else (
                                           0.5 * (1 + torch.erf(x / np.sqrt(2)))
                                           + x * torch.exp(-0.5 * x * x) / np.sqrt(2 * np.pi))))(),
    "softmax": lambda axis: _unary(lambda x: torch.softmax(x, axis), lambda x, z, g: _softmax_bwd(z, g, axis))(),
    "log_softmax": lambda axis: _unary(lambda x: torch.log_softmax(x, axis), lambda x, z, g: (
        g - torch.exp(z) * torch.sum(g, axis, keepdim=True)))(),
    "matmul": lambda: (torch.matmul, lambda a, _, g: (g @ a[1].T, _weight_grad(a[0], g))),
    "linear": lambda: (lambda x, w, b: x @ w + b, _linear_bwd),
    "mse": lambda reduction: (lambda p, t: _reduce((p - t) ** 2, reduction), _mse_bwd(reduction)),
    "squared_error": lambda reduction: (lambda p, t: _reduce(_sq_per_sample(p - t), reduction), _sq_bwd(reduction)),
}


def _float64(a):
  """A float64 leaf with C strides (numpy gives an empty array zero strides, which gradcheck refuses)."""
  x = torch.zeros(np.shape(a), dtype=torch.float64)
  return x.copy_(torch.from_numpy(np.asarray(a, np.float64))).requires_grad_()


def run_gradcheck(entry, args):
  """True when gradcheck or gradgradcheck fails ``entry`` = (fwd, bwd) at ``args`` in float64, or it raises.

  Returns (caught, note): note names an error other than gradcheck's own, so that a broken transcription
  cannot pass for a catch unseen."""
  fn = rule(*entry)
  inputs = tuple(_float64(a) for a in args)
  try:
    gradcheck(fn, inputs, check_batched_grad=True)
    gradgradcheck(fn, inputs, check_batched_grad=True)
    return False, ""
  except GradcheckError as e:  # torch's vmap lacking a batching rule is gradcheck's error too: said
    return True, "" if not str(e).startswith("While computing batched") else str(e).splitlines()[0][:160]
  except Exception as e:  # pylint: disable=broad-except  # the rule's own error: caught, and said
    return True, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
