r"""Per-image logit fit: find the count vector that the last layer's gradient certifies (ours).

Notation of `jaxinvert.labels`: K images, N classes, last layer ``z_k = W o_k + b`` with
W ``[N, d]``, ``p_k = softmax(z_k)``, one-hot ``y_k``, ``g_k = p_k - y_k`` and mean
cross-entropy, so that ``K dW = sum_k g_k o_k^T`` and ``K db = sum_k g_k``. Multiplying
the weight gradient by the (known) weights on the right,

  T := K dW W^T = sum_k g_k (z_k - b)^T        [N, N]
  K db          = sum_k g_k                    [N]

Both depend on the private images only through their K logit vectors: the features'
components that the classifier ignores drop out, and with them most of the unknowns
(d per image become N). A count vector fixes the one-hot rows ``y_k`` up to the order of
the images, which does not matter. So for each candidate count vector c the unknowns are
K N logits and the equations N^2 + N; for K < N there are more equations than unknowns
(T has rank K: K (2N - K) free entries, plus N), the true c is fitted exactly (residual
zero to float precision) and a wrong c, generically, is not. The residual therefore
certifies a count vector, which none of the closed forms (Geng et al., iLRG) can do:
they all assume how the batch's softmax mass is spread, which training breaks (see the
docs/labels.md), while here each image's softmax is fitted.

Search: candidate count vectors from other estimators' hypotheses, and optionally every
vector on the classes the sign rule found (`counts.on_support`), each fitted by
Levenberg-Marquardt from several starts; then, from the best fits, the bias form with
the fitted softmax (``c = sum_k softmax(z_k) - K db``, exact for the true logits) and its
hypotheses, fitted again, for some rounds. The answer is the lowest residual. The fit
is dense (an ``[KN, KN]`` solve per iteration), meant for K N up to a few thousand; for
K >= N the equations no longer pin the logits and `jaxinvert.labels` does not call it.
On wide heads (N = 1000) `jaxinvert.labels` runs the subspace stage below alone: K^2
unknowns, and no step that forms an ``[N, N]`` matrix (`subspace_residual`).

Logit space (`FitSpace`, ours): for K < N, ``K dW = G^T O`` has rank K (G ``[K, N]`` has rank
K when K <= N - 1) and its row space is the span of the K feature vectors, so every
``z_k - b`` lies in the K-dimensional range of ``W V`` (V: the top K right singular
vectors of K dW). `FitSpace.SUBSPACE` fits the K^2 coefficients there first (a
constraint the full fit meets only at an exact fit), then polishes over all K N logits.

Tried and not kept (before this module): fitting the d-dimensional features instead of
the logits with projected Adam was barely over-determined (K (N + d - K) equations for
K d unknowns) and did not converge (an ad hoc trial; no table records it).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from jaxinvert.counts import (class_features, classifier_grads, hypotheses, on_support,
                              support_size)
from jaxinvert.types import CLASSIFIER, Params, Variables


#: Levenberg-Marquardt iterations of each fit over all K N logits (`fit_counts`, `search`).
POLISH_ITERATIONS = 100


class FitSpace(enum.Enum):
  """Where each candidate's logits are searched (module docstring)."""
  LOGITS = "logits"      # all K N logits from the start
  SUBSPACE = "subspace"  # K^2 coefficients in range(W V) first, then all K N logits


class Targets(NamedTuple):
  """Attributes: ``moments`` T = K dW W^T ``[N, N]``; ``bias_grad`` K db ``[N]``;
  ``bias`` the classifier's b ``[N]``; ``scale`` the squared norm of (T, K db)."""

  moments: jax.Array
  bias_grad: jax.Array
  bias: jax.Array
  scale: jax.Array


class Fit(NamedTuple):
  """Attributes: ``residual`` relative squared residual (0 = exact fit); ``scores`` the
  bias form with the fitted softmax, ``sum_k softmax(z_k) - K db`` ``[N]``."""

  residual: jax.Array
  scores: jax.Array


def targets(update: Params, *, variables: Variables, num_images: int) -> Targets:
  """T and K db of the docstring from a gradient and the weights it was taken at."""
  weight, bias_grad = classifier_grads(update)
  if bias_grad is None:
    raise ValueError("the logit fit needs a last layer with a bias")
  layer = variables["params"][CLASSIFIER]
  moments = num_images * weight @ layer["kernel"]
  bias_grad = num_images * bias_grad
  scale = jnp.sum(jnp.square(moments)) + jnp.sum(jnp.square(bias_grad))
  return Targets(moments, bias_grad, jnp.asarray(layer["bias"]), scale)


def residual(logits: jax.Array, *, onehot: jax.Array, target: Targets) -> jax.Array:
  """``(sum_k g_k (z_k - b)^T - T, sum_k g_k - K db)`` flattened, for logits ``[K, N]``."""
  g = jax.nn.softmax(logits) - onehot
  return jnp.concatenate([(g.T @ (logits - target.bias) - target.moments).ravel(),
                          g.sum(axis=0) - target.bias_grad])


def normal_equations(logits: jax.Array, *, onehot: jax.Array, target: Targets
                     ) -> tuple[jax.Array, jax.Array]:
  r"""Gauss-Newton matrix ``J^T J`` ``[KN, KN]`` and gradient ``J^T r`` ``[KN]`` of `residual`.

  Written out instead of forming the Jacobian J ``[N^2 + N, KN]`` (ours; the same values
  to float rounding, `tests/label_fit_test.py`). With ``a_k = z_k - b``, ``g_k = p_k -
  y_k`` and ``D_k = diag(p_k) - p_k p_k^T`` (the softmax's Jacobian), a change ``u`` of
  image k's logits moves the moment part of the residual by ``(D_k u) a_k^T + g_k u^T``
  and the bias part by ``D_k u``. Hence, with R the moment residual ``[N, N]`` and
  ``r_b`` the bias residual,

    (J^T r)_k = D_k (R a_k + r_b) + R^T g_k
    (J^T J)_kl = (a_k.a_l + 1) D_k D_l + (D_k g_l) a_k^T + a_l (D_l g_k)^T + (g_k.g_l) I

  and ``D_k D_l = diag(q) - q p_l^T - p_k q^T + (p_k.p_l) p_k p_l^T`` with ``q = p_k o p_l``:
  O(K^2 N^2) work against O((N^2 + N) (KN)^2) for ``J^T J`` from the Jacobian.

  Args:
    logits: ``[K, N]``.
    onehot: ``[K, N]`` labels of the candidate count vector.
    target: from `targets`.

  Returns:
    ``(J^T J [KN, KN], J^T r [KN])``, image-major (the order of ``logits.ravel()``).
  """
  num_images, num_classes = logits.shape
  p = jax.nn.softmax(logits)
  g = p - onehot
  a = logits - target.bias
  moments_res = g.T @ a - target.moments                    # R
  bias_res = g.sum(axis=0) - target.bias_grad                # r_b
  soft_jvp = lambda v: p * v - p * jnp.sum(p * v, axis=-1, keepdims=True)  # D_k v_k, row-wise
  grad = soft_jvp(a @ moments_res.T + bias_res) + g @ moments_res
  q = p[:, None, :] * p[None, :, :]                        # [k, l, n] = p_kn p_ln
  overlap = p @ p.T                                         # p_k . p_l
  dd = (q[..., None] * jnp.eye(num_classes)                 # diag(q)
        - q[..., None] * p[None, :, None, :]                # - q p_l^T
        - p[:, None, :, None] * q[:, :, None, :]            # - p_k q^T
        + overlap[:, :, None, None] * p[:, None, :, None] * p[None, :, None, :])
  dg = p[:, None, :] * g[None, :, :] - p[:, None, :] * (p @ g.T)[:, :, None]  # D_k g_l
  hess = ((a @ a.T + 1.0)[:, :, None, None] * dd
          + dg[..., None] * a[:, None, None, :]
          + a[None, :, :, None] * jnp.swapaxes(dg, 0, 1)[:, :, None, :]
          + (g @ g.T)[:, :, None, None] * jnp.eye(num_classes))
  size = num_images * num_classes
  return hess.transpose(0, 2, 1, 3).reshape(size, size), grad.ravel()


class Span(NamedTuple):
  """What `FitSpace.SUBSPACE` needs of the feature basis, computed once per update.

  Attributes: ``basis`` B ``[N, r]`` (`feature_basis`); ``frame`` Q ``[N, r]``, orthonormal
  columns whose range holds B's; ``pinv`` B's pseudo-inverse ``[r, N]``; ``moments`` T Q
  ``[N, r]``; ``outside`` ``|T (I - Q Q^T)|^2``, the part of the residual no logits in the
  span can fit (`subspace_residual`).
  """

  basis: jax.Array
  frame: jax.Array
  pinv: jax.Array
  moments: jax.Array
  outside: jax.Array


def after(x, *deps):
  """``x`` plus an exact zero computed from ``deps``: what uses the result runs after them.

  Orders batched LAPACK calls (QR, SVD, Cholesky, ...) one after another within a program.
  jaxlib 0.10.2's CPU LAPACK kernels split a batch over XLA's intra-op thread pool and block
  their own pool thread until the pieces are done; when XLA runs as many such calls at
  once as the pool has threads (it runs independent ops concurrently), every thread waits
  and the program never finishes (a `gdb` backtrace: the pool's threads in
  ``jax::ParallelBatchMap`` under ``lapack_*_ffi``; docs/labels.md, "Wide heads"). A data
  dependency on the previous call keeps them from overlapping. It has to be arithmetic:
  ``jax.lax.optimization_barrier`` orders the jaxpr but not XLA:CPU's run time (a chain of
  barriers between Cholesky calls still deadlocked). ``min(|s|, 0)``, with ``s`` a finite
  number read from ``deps``, is 0 and XLA does not fold it away.

  Args:
    x: a pytree; its floating-point leaves get the zero added (a copy of each).
    *deps: pytrees that must be computed first.

  Returns:
    ``x``, the same values.
  """
  firsts = [jnp.ravel(d)[0].astype(jnp.float32) for d in jax.tree.leaves(deps) if jnp.size(d)]
  if not firsts:
    return x
  zero = jnp.minimum(jnp.abs(jnp.nan_to_num(sum(firsts))), 0.0)
  return jax.tree.map(lambda a: a + zero.astype(a.dtype)
                      if jnp.issubdtype(jnp.result_type(a), jnp.inexact) else a, x)


def classifier_after(update: Params, *deps) -> Params:
  """`after` on the last layer's entries of ``update`` alone (what the label estimators'
  LAPACK calls read), so that the rest of the tree is not copied."""
  return {**update, CLASSIFIER: after(update[CLASSIFIER], *deps)}


def span(basis: jax.Array, *, target: Targets) -> Span:
  """The `Span` of ``basis`` ``[N, r]`` for the update of ``target``."""
  frame, _ = jnp.linalg.qr(basis)
  moments = target.moments @ frame
  # The pseudo-inverse (an SVD) waits for the QR: see `after`.
  return Span(basis, frame, jnp.linalg.pinv(after(basis, frame)), moments,
              jnp.sum(jnp.square(target.moments - moments @ frame.T)))


def subspace_residual(coeffs: jax.Array, *, onehot: jax.Array, target: Targets, span: Span
                      ) -> jax.Array:
  r"""`residual` at logits ``b + B c_k`` with its moment part seen through the frame Q.

  Ours. Every ``a_k = z_k - b = B c_k`` lies in range(Q), so the moment residual
  ``R = sum_k g_k a_k^T - T`` splits into ``R Q Q^T = (sum_k g_k s_k^T - T Q) Q^T`` with
  ``s_k = Q^T a_k``, and ``R (I - Q Q^T) = -T (I - Q Q^T)``, which no coefficients change.
  Hence ``|residual|^2 = |subspace_residual|^2 + span.outside``: ``[N, r]`` instead of
  ``[N, N]`` per evaluation (K N r work instead of K N^2; at N = 1000 what makes the fit
  affordable). For a FedSGD gradient ``outside`` is float rounding (T's rows lie in the
  span); for a FedAvg average gradient it is not.

  Args:
    coeffs: ``[K, r]``.
    onehot: ``[K, N]`` labels of the candidate count vector.
    target: from `targets`.
    span: from `span`.

  Returns:
    ``[N r + N]``: the moment part ``sum_k g_k s_k^T - T Q`` flattened, then the bias part.
  """
  a = coeffs @ span.basis.T
  g = jax.nn.softmax(target.bias + a) - onehot
  return jnp.concatenate([(g.T @ (a @ span.frame) - span.moments).ravel(),
                          g.sum(axis=0) - target.bias_grad])


def subspace_normal_equations(coeffs: jax.Array, *, onehot: jax.Array, target: Targets,
                              span: Span) -> tuple[jax.Array, jax.Array]:
  r"""`normal_equations` for logits ``z_k = b + B c_k`` with coefficients ``c_k`` ``[r]``.

  The Jacobian is the full one times B per image, so the terms are ``B^T (J^T J)_kl B`` and
  ``B^T (J^T r)_k``. Projected term by term, without the ``[K, N, K, N]`` matrix or the
  ``[N, N]`` residual (ours): with ``E_k = D_k B`` ``[N, r]`` (D_k symmetric), ``h_k = B^T
  a_k``, ``s_k = Q^T a_k``, ``M = B^T Q`` and the frame's residual ``R' = R Q`` of
  `subspace_residual` (``R B = R' M^T`` and ``R a_k = R' s_k``, as ``(I - Q Q^T) B = 0``),

    B^T (J^T r)_k = E_k^T (R' s_k + r_b) + M R'^T g_k
    B^T (J^T J)_kl B = (a_k.a_l + 1) E_k^T E_l + (E_k^T g_l) h_k^T + h_l (E_l^T g_k)^T
                       + (g_k.g_l) B^T B.

  Args:
    coeffs: ``[K, r]``.
    onehot: ``[K, N]`` labels of the candidate count vector.
    target: from `targets`.
    span: from `span` of the basis B.

  Returns:
    ``(J^T J [K r, K r], J^T r [K r])``, image-major (the order of ``coeffs.ravel()``).
  """
  num_images, rank = coeffs.shape
  basis = span.basis
  a = coeffs @ basis.T
  p = jax.nn.softmax(target.bias + a)
  g = p - onehot
  s = a @ span.frame
  res = g.T @ s - span.moments                                                  # R' [N, r]
  bias_res = g.sum(axis=0) - target.bias_grad
  e = p[:, :, None] * basis[None] - p[:, :, None] * (p @ basis)[:, None, :]   # [k, n, i]
  grad = (jnp.einsum("kni,kn->ki", e, s @ res.T + bias_res)
          + (g @ res) @ (basis.T @ span.frame).T)
  h = a @ basis                                                                # [k, i]
  f = jnp.einsum("kni,ln->kli", e, g)                                          # E_k^T g_l
  hess = ((a @ a.T + 1.0)[:, :, None, None] * jnp.einsum("kni,lnj->klij", e, e)
          + f[..., None] * h[:, None, None, :]
          + h[None, :, :, None] * jnp.swapaxes(f, 0, 1)[:, :, None, :]
          + (g @ g.T)[:, :, None, None] * (basis.T @ basis))
  size = num_images * rank
  return hess.transpose(0, 2, 1, 3).reshape(size, size), grad.ravel()


def feature_basis(update: Params, *, variables: Variables, num_images: int) -> jax.Array:
  """``W V`` ``[N, r]``: the logit directions that the batch's features can take.

  V holds the top r = min(K, d) right singular vectors of the weight gradient ``[N, d]``;
  for K < N its row space is the span of the K features (module docstring), so each
  true ``z_k - b`` is ``W V a_k`` for some ``a_k`` ``[r]``.
  """
  weight, _ = classifier_grads(update)
  _, _, vt = jnp.linalg.svd(weight, full_matrices=False)
  rank = min(num_images, vt.shape[0])
  kernel = variables["params"][CLASSIFIER]["kernel"]  # [d, N]
  return kernel.T @ vt[:rank].T


def class_logits(update: Params, *, variables: Variables) -> jax.Array:
  """A start for each class's images: the logits of ``dW_n / db_n`` (iLRG's class
  feature), ``[N, N]``, made finite."""
  layer = variables["params"][CLASSIFIER]
  logits = class_features(update) @ layer["kernel"] + layer["bias"]
  return jnp.clip(jnp.where(jnp.isfinite(logits), logits, 0.0), -50.0, 50.0)


def _levenberg_marquardt(fn, terms, x0: jax.Array, iterations: int
                         ) -> tuple[jax.Array, jax.Array]:
  """Minimises ``|fn(x)|^2``; returns ``(x, cost)``. ``terms(x)`` gives ``(J^T J, J^T
  fn(x))`` (`normal_equations`). Steps that do not lower the cost are rejected and the
  damping raised (Marquardt's diagonal scaling)."""

  def body(carry, _):
    x, damping, cost = carry
    hess, grad = terms(x)
    # J^T J plus a positive diagonal is symmetric positive definite: Cholesky, not LU,
    # whose pivots-to-permutation loop cost XLA:CPU one while-loop trip per row.
    # A factor that fails (NaN) gives a NaN step, which is rejected like any bad step.
    damped = hess + damping * jnp.diag(jnp.diag(hess) + 1e-9)
    step = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(damped, lower=True), -grad)
    new_cost = jnp.sum(jnp.square(fn(x + step)))
    better = new_cost < cost  # False for NaN
    return (jnp.where(better, x + step, x),
            jnp.clip(jnp.where(better, damping * 0.3, damping * 10.0), 1e-12, 1e12),
            jnp.where(better, new_cost, cost)), None

  cost0 = jnp.sum(jnp.square(fn(x0)))
  cost0 = jnp.where(jnp.isfinite(cost0), cost0, jnp.inf)
  (x, _, cost), _ = jax.lax.scan(body, (x0, jnp.float32(1e-2), cost0), None, length=iterations)
  return x, cost


def fit_counts(key: jax.Array, *, counts: jax.Array, target: Targets, starts_from: jax.Array,
               num_images: int, starts: int = 3, iterations: int = POLISH_ITERATIONS,
               basis: jax.Array | None = None, subspace_iterations: int = 100) -> Fit:
  """Fits K logit vectors to ``target`` with the labels of ``counts``; the best of ``starts``.

  Args:
    key: PRNG key for the starts' noise.
    counts: candidate count vector ``[N]`` int; one that is negative somewhere or does
      not sum to K gets an infinite residual.
    target: from `targets`.
    starts_from: per-class start logits ``[N, N]`` (`class_logits`).
    num_images: K.
    starts: Levenberg-Marquardt runs; start s is the class logits plus noise of scale
      0.1 (s = 0 mod 3) or 1 (s = 1), or the bias plus 4 on the class (s = 2).
    iterations: Levenberg-Marquardt iterations per start over all K N logits.
    basis: `feature_basis` ``[N, r]`` for `FitSpace.SUBSPACE`: each start is first
      projected onto ``b + A basis^T`` (least squares) and fitted there over A ``[K, r]``
      for ``subspace_iterations``, then over all logits for ``iterations``; with
      ``iterations=0`` the subspace fit is the answer, and no step costs more than
      ``[N, r]`` per image (`subspace_residual`; how `labels.restore` fits wide heads).
      None: the logits only (`FitSpace.LOGITS`).
    subspace_iterations: see ``basis``.

  Returns:
    A `Fit`.
  """
  num_classes = counts.shape[0]
  valid = jnp.all(counts >= 0) & (jnp.sum(counts) == num_images)
  label = jnp.repeat(jnp.arange(num_classes), jnp.maximum(counts, 0),
                     total_repeat_length=num_images)
  onehot = jax.nn.one_hot(label, num_classes)
  shape = (num_images, num_classes)
  fit_span = None if basis is None else span(basis, target=target)  # once, under vmap too
  fn = lambda x: residual(x.reshape(shape), onehot=onehot, target=target)
  terms = lambda x: normal_equations(x.reshape(shape), onehot=onehot, target=target)

  def one_start(start_key, kind):
    noise = jax.random.normal(start_key, shape)
    x0 = jnp.select([kind == 0, kind == 1],
                    [starts_from[label] + 0.1 * noise, starts_from[label] + noise],
                    target.bias + 4.0 * onehot + noise)
    if fit_span is not None:
      span_shape = (num_images, basis.shape[1])
      a0 = (x0 - target.bias) @ fit_span.pinv.T
      span_fn = lambda a: subspace_residual(a.reshape(span_shape), onehot=onehot,
                                            target=target, span=fit_span)
      span_terms = lambda a: subspace_normal_equations(a.reshape(span_shape), onehot=onehot,
                                                       target=target, span=fit_span)
      a, cost = _levenberg_marquardt(span_fn, span_terms, a0.ravel(), subspace_iterations)
      x0 = target.bias + a.reshape(span_shape) @ basis.T
      if iterations == 0:  # |residual|^2 without forming the [N, N] residual
        return x0, cost + fit_span.outside
    x, cost = _levenberg_marquardt(fn, terms, x0.ravel(), iterations)
    return x.reshape(shape), cost

  logits, cost = jax.vmap(one_start)(jax.random.split(key, starts), jnp.arange(starts) % 3)
  best = jnp.argmin(jnp.where(jnp.isfinite(cost), cost, jnp.inf))
  rel = jnp.where(valid, cost[best] / jnp.maximum(target.scale, 1e-30), jnp.inf)
  scores = jax.nn.softmax(logits[best]).sum(axis=0) - target.bias_grad
  return Fit(rel, scores)


def search(key: jax.Array, *, base_scores: jax.Array, update: Params, variables: Variables,
           num_images: int, per_source: int = 8, rounds: int = 2, keep: int = 4,
           starts: int = 3, iterations: int = POLISH_ITERATIONS,
           minimum: jax.Array | None = None, support_limit: int = 0,
           space: FitSpace = FitSpace.SUBSPACE
           ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The count vector with the lowest fit residual among candidates (module docstring).

  Args:
    key: PRNG key.
    base_scores: ``[M, N]`` real-valued counts from M other estimators; each gives its
      ``per_source`` most likely count vectors (`counts.hypotheses`) as candidates.
    update: gradient tree (FedSGD gradient, or a FedAvg average gradient).
    variables: the weights it was taken at.
    num_images: K.
    per_source: hypotheses taken from each source, and from each kept fit per round.
    rounds: refinement rounds; each takes the ``keep`` best fits so far and fits the
      hypotheses of their fitted bias-form scores.
    keep: fits refined per round.
    starts, iterations: of each fit (`fit_counts`).
    minimum: ``[N]`` counts the answer must reach (e.g. `counts.present_classes`);
      every candidate is drawn at or above it (`counts.hypotheses`), and any that is
      not is never returned.
    support_limit: with ``minimum``, where K images fit on a set of classes in at most
      this many ways (`counts.support_size`), every count vector on exactly the classes
      ``minimum`` requires (`counts.on_support`) is a first-round candidate too (ours).
      Where the sign rule has found all of the batch's classes the truth is then among
      the candidates, which the estimators' hypotheses (one or two unit moves between
      the classes where a move costs least) often miss once the victim is trained. 0: off.
    space: where each fit starts (`FitSpace`; the default is `labels.restore`'s).

  Returns:
    ``(scores [N], counts [N] int32, residual, runner_up)``: the best fit, whose residual
    near zero (1e-8 and below in float32) certifies the count vector, and the lowest
    residual of any other count vector (inf if there is none), the best fit's margin
    where no fit is exact (a FedAvg average gradient, `labels.restore_fedavg`).
  """
  target = targets(update, variables=variables, num_images=num_images)
  starts_from = class_logits(update, variables=variables)
  # Its SVD waits for the sources (SELECT's iLRG solves with an SVD too; `after`).
  basis = (feature_basis(classifier_after(update, base_scores), variables=variables,
                         num_images=num_images)
           if FitSpace(space) == FitSpace.SUBSPACE else None)
  fit_all = jax.vmap(lambda k, c, b: fit_counts(k, counts=c, target=target,
                                                starts_from=starts_from,
                                                num_images=num_images, starts=starts,
                                                iterations=iterations, basis=b),
                     in_axes=(0, 0, None))
  propose = jax.vmap(lambda s: hypotheses(s, num_images=num_images, num=per_source,
                                          strict=False, minimum=minimum))
  num_classes = base_scores.shape[-1]
  candidates = propose(base_scores).reshape(-1, num_classes)
  fits = fit_all(jax.random.split(key, candidates.shape[0]), candidates, basis)

  def fit_more(new, new_key, candidates, fits):
    # These fits (their span's QR and SVD) wait for the earlier ones: `after`.
    new_fits = fit_all(jax.random.split(new_key, new.shape[0]), new,
                       None if basis is None else after(basis, fits.residual))
    return (jnp.concatenate([candidates, new]),
            jax.tree.map(lambda a, b: jnp.concatenate([a, b]), fits, new_fits))

  if minimum is not None and support_size(num_images) <= support_limit:
    # Keys of their own, so that the hypotheses' fits are those without this option.
    candidates, fits = fit_more(on_support(jnp.asarray(minimum) > 0, num_images=num_images),
                                jax.random.fold_in(key, 2 ** 31), candidates, fits)
  for r in range(rounds):
    top = jnp.argsort(fits.residual)[:keep]
    candidates, fits = fit_more(propose(fits.scores[top]).reshape(-1, num_classes),
                                jax.random.fold_in(key, r + 1), candidates, fits)
  residual = fits.residual
  if minimum is not None:  # filter the answer only; refinement may pass through others
    residual = jnp.where(jnp.all(candidates >= jnp.asarray(minimum, jnp.int32), axis=-1),
                         residual, jnp.inf)
  best = jnp.argmin(residual)
  others = jnp.where(jnp.all(candidates == candidates[best], axis=-1), jnp.inf, residual)
  return (fits.scores[best], candidates[best].astype(jnp.int32), residual[best],
          jnp.min(others))
