"""The on-policy base of ACKTR, SMAC and KFRELAX: what the three share, so that each keeps only its own update."""

from __future__ import annotations

import inspect
import io
import math
import os
import pathlib
import random
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer, RolloutBufferSamples
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_natgrad.common.checks import (
    SHARED_ARGUMENT_CHECKS,
    ArgumentCheck,
    check_arguments,
    check_not_recurrent,
    check_spaces,
)
from sb3_natgrad.common.distributions import policy_kl
from sb3_natgrad.common.log_schedule import LogScheduleMixin
from sb3_natgrad.common.minatar import MinAtarPolicy
from sb3_natgrad.common.parameter_docs import SHARED_PARAMETER_DOCS, merge_parameter_docs
from sb3_natgrad.common.parameters import restore_parameters
from sb3_natgrad.common.save_util import check_saved_algorithm
from sb3_natgrad.optim.validation import all_finite, invalid, is_number

SelfNaturalGradientAlgorithm = TypeVar("SelfNaturalGradientAlgorithm", bound="NaturalGradientAlgorithm")

#: the arguments ``OnPolicyAlgorithm.__init__`` takes; every other argument of an algorithm becomes its attribute
_ON_POLICY_ARGUMENTS = frozenset(inspect.signature(OnPolicyAlgorithm.__init__).parameters) - {"self"}
#: values of required ``OnPolicyAlgorithm`` arguments that an algorithm may not have (SMAC's critic has its own
#: loss, so no ``vf_coef``; KFRELAX acts through stored noise, so no gSDE)
_ON_POLICY_FILLERS = {"vf_coef": 0.0, "use_sde": False, "sde_sample_freq": -1}
#: the exact-KL trust region's least shrinking per try and most tries, where an algorithm has no arguments for them
#: (KFRELAX, ACKTR's ``max_kl``; SMAC's line search takes them as arguments)
KL_SHRINKING_FACTOR = 0.5
MAX_KL_BACKTRACKS = 10


def own_arguments(local_variables: Mapping[str, Any]) -> dict[str, Any]:
    """
    An algorithm's ``__init__`` arguments from its ``locals()`` (called first thing, so nothing else is there).

    :param local_variables: ``locals()`` of the ``__init__``
    :return: every argument but ``self``
    """
    return {key: value for key, value in local_variables.items() if key not in ("self", "__class__")}


def _non_finite_observation(obs: Any) -> str | None:
    """``"env 3"`` or ``"env 3, key 'image'"`` for the first non-finite observation of a batch, ``None`` if all are finite."""
    parts = obs.items() if isinstance(obs, dict) else [(None, obs)]
    for key, value in parts:
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            return f"env {index}" + ("" if key is None else f", key {key!r}")
    return None


def _out_of_range_observation(obs: Any, space: spaces.Space) -> str | None:
    """
    ``"env 3 (5 is not in Discrete(4))"`` for the first observation of a Discrete / MultiDiscrete / MultiBinary space
    (or such a key of a Dict space) outside what SB3's one-hot encoding takes (``0 .. n - 1``: it ignores ``start``),
    which fails deep inside torch; else ``None`` (also when the observations cannot be read).
    """
    try:
        parts = (
            [(key, obs[key], space[key]) for key in space.spaces] if isinstance(space, spaces.Dict) else [(None, obs, space)]
        )
        for key, value, subspace in parts:
            if isinstance(subspace, spaces.Discrete):
                high = np.asarray(subspace.n) - 1
            elif isinstance(subspace, spaces.MultiDiscrete):
                high = np.asarray(subspace.nvec) - 1
            elif isinstance(subspace, spaces.MultiBinary):
                high = np.asarray(1)
            else:
                continue
            array = np.asarray(value)
            batch = array.reshape(array.shape[0], -1)
            bad = ((batch < 0) | (batch > high.reshape(-1))).any(axis=1)
            if bad.any():
                index = int(np.flatnonzero(bad)[0])
                where = f"env {index}" + ("" if key is None else f", key {key!r}")
                start = getattr(subspace, "start", 0)
                space_text = str(subspace) if not np.any(start) else f"{subspace}, which SB3 encodes as 0 .. n - 1"
                return f"{where} ({array[index].tolist()} is not in {space_text})"
    except Exception:  # never hide the original error behind a failure of this diagnosis
        return None
    return None


def _global_rng_states() -> dict[str, Any]:
    """The states of the random number generators training draws from: Python's, NumPy's, PyTorch's (and CUDA's)."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state()}
    if th.cuda.is_available() and th.cuda.is_initialized():
        states["cuda"] = th.cuda.get_rng_state_all()
    return states


def _set_global_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    th.set_rng_state(states["torch"])
    if "cuda" in states and th.cuda.is_available() and len(states["cuda"]) == th.cuda.device_count():
        th.cuda.set_rng_state_all(states["cuda"])


def _plain(value: Any) -> Any:
    """NumPy scalars (``np.float32(0.01)``, ``np.int64(5)``) as Python numbers, everything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


class NaturalGradientAlgorithm(LogScheduleMixin, OnPolicyAlgorithm):
    """
    An ``OnPolicyAlgorithm`` whose update uses each rollout once, as one batch (A2C's schedule), with the
    machinery ACKTR, SMAC and KFRELAX share:

    - the checks of the arguments, from one table (:data:`~sb3_natgrad.common.checks.SHARED_ARGUMENT_CHECKS` and
      the algorithm's ``argument_checks``), and of the spaces, with errors that name the bad value; NumPy scalars
      are accepted and stored as Python numbers;
    - the arguments that ``OnPolicyAlgorithm`` does not take are stored as attributes of the same name;
    - :meth:`load` refuses a file saved by another algorithm (the algorithm's ``saved_markers`` are settings only
      its files have);
    - one counter of skipped updates, ``skipped_updates`` (logged as ``train/skipped_updates``), and one way to
      undo a step whose policy is not finite (:meth:`_keep_if_finite`);
    - the exact batch-mean ``KL(pi_old || pi_new)`` (:meth:`_exact_kl`) and the log keys all three write;
    - the documentation of the arguments they share: a subclass's docstring documents its own arguments, and the
      others are added from its ``parameter_docs`` tables and
      :data:`~sb3_natgrad.common.parameter_docs.SHARED_PARAMETER_DOCS` when the class is created.

    A subclass's ``__init__`` lists its arguments with their defaults and docstring and passes them on with
    ``super().__init__(**own_arguments(locals()))``; its ``train()`` starts with :meth:`_begin_update` and ends with
    :meth:`_finish_update`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
        "MinAtarPolicy": MinAtarPolicy,
    }
    policy: ActorCriticPolicy
    #: the algorithm's own argument checks (they take precedence over the shared ones of the same name)
    argument_checks: ClassVar[Mapping[str, ArgumentCheck]] = {}
    #: settings that every saved model of this algorithm has and no other algorithm's model has
    saved_markers: ClassVar[tuple[str, ...]] = ()
    #: descriptions of arguments the class's docstring leaves out (before the shared ones, which they override)
    parameter_docs: ClassVar[tuple[Mapping[str, str], ...]] = ()
    #: ``learn()``'s ``log_interval`` when none is given (SB3's A2C: 100, PPO: 1)
    default_log_interval: ClassVar[int] = 100
    #: updates that left the policy unchanged (non-finite values, refused data); a class default so that files
    #: saved before the counter existed load with 0
    skipped_updates: int = 0
    #: this many skipped updates in a row stop training with an error that says what is not finite (``None``: never)
    max_consecutive_skips: int | None = 10
    _consecutive_skips: int = 0
    _skipped_this_update: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        docstring = cls.__dict__.get("__doc__")
        if docstring and "__init__" in cls.__dict__:
            cls.__doc__ = merge_parameter_docs(docstring, cls.__init__, (*cls.parameter_docs, SHARED_PARAMETER_DOCS))

    def __init__(self, policy: str | type[ActorCriticPolicy], env: GymEnv | str | None, **arguments: Any):
        name = type(self).__name__
        init_setup_model = arguments.pop("_init_setup_model", True)
        arguments = {key: _plain(value) for key, value in arguments.items()}
        check_not_recurrent(name, policy)
        check_arguments(name, {**SHARED_ARGUMENT_CHECKS, **self.argument_checks}, arguments)
        self._check_argument_combinations(arguments)
        if env is not None and hasattr(env, "observation_space") and hasattr(env, "action_space"):
            # before SB3 wraps the env: some unsupported spaces fail deep inside the vectorised wrapper
            check_spaces(name, env.observation_space, env.action_space)
        on_policy = {**_ON_POLICY_FILLERS, **{key: value for key, value in arguments.items() if key in _ON_POLICY_ARGUMENTS}}
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]  # None when SB3's load() builds the model, as for SB3's own algorithms
            **on_policy,
            _init_setup_model=False,
            supported_action_spaces=None,  # checked by check_spaces, with a clearer error
        )
        for key, value in arguments.items():
            if key not in _ON_POLICY_ARGUMENTS:
                setattr(self, key, value)
        if init_setup_model:
            self._setup_model()

    def _check_argument_combinations(self, arguments: dict[str, Any]) -> None:
        """
        Checks that involve several arguments, or more than a value's range (for a subclass to extend).

        :param arguments: every argument of ``__init__`` by name
        """

    def _setup_model(self) -> None:
        # every path goes through here: a given env, an env id made by SB3, and load()
        check_spaces(type(self).__name__, self.observation_space, self.action_space)
        super()._setup_model()
        if not isinstance(self.policy, ActorCriticPolicy):
            raise ValueError(f"{type(self).__name__} needs an ActorCriticPolicy, got {type(self.policy).__name__}")

    # -- one update ----------------------------------------------------------------------------------------------

    def _begin_update(self, *optimizers: th.optim.Optimizer) -> None:
        """
        Training mode, this update's learning rate for ``optimizers``, and one more update in the log schedule
        (counted whether the update is then taken or skipped, so that log-only diagnostics stay in step).
        """
        # SB3's progress goes below 0 when the last rollout overshoots total_timesteps; a linearly decaying schedule
        # would then give a negative learning rate (a step up the loss): the schedules end at progress 0
        self._current_progress_remaining = max(self._current_progress_remaining, 0.0)
        self._check_schedules()
        self.policy.set_training_mode(True)
        if optimizers:
            self._update_learning_rate(list(optimizers))
        self._iterations_in_learn += 1
        self._skipped_this_update = False

    def _schedules(self) -> dict[str, Callable[[float], float]]:
        """The schedules of this algorithm by argument name (a subclass adds its own)."""
        return {"learning_rate": self.lr_schedule}

    def _check_schedules(self) -> None:
        """Every schedule's value for this update is a finite number >= 0, or a ``ValueError`` names it (before any step)."""
        progress = self._current_progress_remaining
        for name, schedule in self._schedules().items():
            value = schedule(progress)
            if not is_number(value) or value < 0:
                raise invalid(
                    type(self).__name__,
                    name,
                    value,
                    f"a finite number >= 0 from the schedule at progress_remaining={progress:g} (no parameter was changed)",
                )

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        # A non-finite observation fails deep inside torch.distributions, a discrete one outside its space inside
        # torch's one_hot; say which observation it was.
        try:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        except (ValueError, RuntimeError, IndexError) as error:
            where = _non_finite_observation(self._last_obs)
            if where is not None:
                raise ValueError(
                    f"{type(self).__name__}: the observation of {where} is not finite, so the policy cannot act on it; "
                    "check the environment (stable_baselines3.common.vec_env.VecCheckNan finds the step that produced it)"
                ) from error
            where = _out_of_range_observation(self._last_obs, self.observation_space)
            if where is not None:
                raise ValueError(
                    f"{type(self).__name__}: the observation of {where}, so the policy cannot encode it; check the "
                    "environment's observation_space"
                ) from error
            raise

    def _whole_batch(self) -> tuple[RolloutBufferSamples, th.Tensor]:
        """The rollout as one batch, and its actions as the policy's distributions take them."""
        data = next(iter(self.rollout_buffer.get(batch_size=None)))
        return data, self._training_actions(data.actions)

    def _training_actions(self, actions: th.Tensor) -> th.Tensor:
        """Buffer actions (float32) in the layout of ``distribution.log_prob``."""
        if isinstance(self.action_space, spaces.Discrete):
            return actions.long().flatten()
        return actions

    def _standardized(self, values: th.Tensor) -> th.Tensor:
        """``values`` standardised over the batch if ``normalize_advantage`` (a batch of one is left as it is, as in SB3)."""
        if not getattr(self, "normalize_advantage", False) or len(values) < 2:
            return values
        return (values - values.mean()) / (values.std() + 1e-8)

    def _exact_kl(self, old_distribution: Any, obs: PyTorchObs) -> float:
        """The batch mean of ``KL(pi_old || pi_new)`` for the current policy (``nan`` if the policy is not finite)."""
        with th.no_grad():
            try:
                return float(policy_kl(old_distribution, self.policy.get_distribution(obs)).mean())
            except ValueError:  # torch.distributions rejects non-finite parameters
                return math.nan

    def _backtrack_to_kl(
        self,
        params: Sequence[nn.Parameter],
        before: Sequence[th.Tensor],
        old_distribution: Any,
        obs: PyTorchObs,
        max_kl: float,
        shrinking_factor: float,
        max_iter: int,
    ) -> tuple[float, float]:
        """
        The exact-KL trust region of all three algorithms (SMAC's line search, KFRELAX's capped update, ACKTR's
        ``max_kl``). With ``params`` at ``before + delta`` (a step just taken): while the exact batch-mean
        ``KL(pi_old || pi_new)`` exceeds ``max_kl``, shrink ``delta`` by ``min(shrinking_factor, 0.95 sqrt(max_kl /
        KL))`` — the KL is quadratic in the step for small steps, so this jumps to just inside the bound, and shrinks
        at least by the factor in case the quadratic model is off — at most ``max_iter`` times. A non-finite KL
        counts as too large.

        :return: the fraction of ``delta`` in place and its KL (above ``max_kl`` if ``max_iter`` tries did not suffice)
        """
        deltas = [p.detach() - b for p, b in zip(params, before, strict=True)]
        fraction = 1.0
        kl = self._exact_kl(old_distribution, obs)
        for _ in range(max_iter):
            if math.isfinite(kl) and kl <= max_kl:
                break
            fraction *= min(shrinking_factor, 0.95 * math.sqrt(max_kl / kl)) if math.isfinite(kl) else shrinking_factor
            with th.no_grad():
                for param, start, delta in zip(params, before, deltas, strict=True):
                    param.copy_(start + fraction * delta)
            kl = self._exact_kl(old_distribution, obs)
        return fraction, kl

    def _bound_kl(
        self, params: Sequence[nn.Parameter], before: Sequence[th.Tensor], old_distribution: Any, obs: PyTorchObs
    ) -> tuple[float, float | None]:
        """
        ACKTR's and KFRELAX's optional exact-KL bound on a step just taken (``params`` at ``before + delta``): with
        ``max_kl``, :meth:`_backtrack_to_kl` by :data:`KL_SHRINKING_FACTOR`, at most :data:`MAX_KL_BACKTRACKS` times;
        without, the exact KL is computed only for an update whose values reach the log.

        :return: the fraction of the step kept, and the exact KL (``None``: neither bounded nor logged)
        """
        max_kl = getattr(self, "max_kl", None)
        if max_kl is not None:
            return self._backtrack_to_kl(params, before, old_distribution, obs, max_kl, KL_SHRINKING_FACTOR, MAX_KL_BACKTRACKS)
        if self._logs_written_after_this_update():
            return 1.0, self._exact_kl(old_distribution, obs)
        return 1.0, None

    def _skip_update(self, reason: str, outcome: str = "skipped", what: str = "update") -> None:
        """
        Count an update that left the policy unchanged, and say why.

        :param reason: what was wrong, e.g. ``"non-finite loss (nan)"``
        :param outcome: ``"skipped"`` (nothing was changed) or ``"reverted"`` (a step was undone)
        :param what: what was not updated, e.g. ``"actor update"``
        """
        self.skipped_updates += 1
        self._skipped_this_update = True
        self._consecutive_skips += 1
        name = type(self).__name__
        limit = self.max_consecutive_skips
        if limit is not None and self._consecutive_skips >= limit:
            raise RuntimeError(
                f"{name}: {self._consecutive_skips} updates in a row were {outcome} (the last: {reason}), so training "
                f"has stalled. {self._non_finite_report()} (max_consecutive_skips={limit} sets this limit; None disables it)"
            )
        warnings.warn(f"{name}: {reason}; the {what} was {outcome}", RuntimeWarning, stacklevel=3)
        self.logger.record("train/skipped_updates", self.skipped_updates)

    def _non_finite_report(self) -> str:
        """What is not finite among the normalisation statistics, the rollout and the parameters, and what to do."""
        found = []
        vec_normalize = self.get_vec_normalize_env()
        if vec_normalize is not None:
            for stats_name in ("obs_rms", "ret_rms"):
                stats = getattr(vec_normalize, stats_name, None)
                for field in ("mean", "var"):
                    value = getattr(stats, field, None) if not isinstance(stats, dict) else None
                    if value is not None and not np.all(np.isfinite(value)):
                        found.append(f"VecNormalize's {stats_name}.{field}")
        buffer = self.rollout_buffer
        for field in ("observations", "actions", "rewards", "returns", "values", "advantages"):
            value = getattr(buffer, field, None)
            values = value.values() if isinstance(value, dict) else [value]
            if any(v is not None and not np.all(np.isfinite(v)) for v in values):
                found.append(f"the rollout's {field}")
        if not all_finite([p.detach() for p in self.policy.parameters()]):
            found.append("the policy's parameters")
        if found:
            return (
                f"Not finite: {', '.join(found)}. A non-finite reward or observation from the environment poisons the "
                "statistics that follow it (VecNormalize's running return variance keeps it for good): check the "
                "environment, e.g. with stable_baselines3.common.vec_env.VecCheckNan."
            )
        return (
            "The rollout and the parameters are finite, so the curvature or the step is not: raise the damping or "
            "lower the learning rate / trust region."
        )

    def _keep_if_finite(
        self, params: Sequence[nn.Parameter], backup: Sequence[th.Tensor], kl: float | None, what: str = "update"
    ) -> bool:
        """
        After a step: keep it if the KL (``None``: not computed) and every parameter are finite; otherwise copy
        ``backup`` back into ``params`` and count the update as skipped.

        :return: whether the step was kept
        """
        if (kl is None or math.isfinite(kl)) and all_finite([p.detach() for p in params]):
            return True
        restore_parameters(params, backup)
        self._skip_update(f"the step gave a non-finite policy (KL={kl})", outcome="reverted", what=what)
        return False

    def _finish_update(
        self, *, policy_loss: float, value_loss: float, entropy_loss: float, kl: float | None = None, **logged: float
    ) -> None:
        """Count the update and log A2C's keys, the KL, the skipped updates and the algorithm's own ``train/`` keys."""
        self._n_updates += 1
        if not self._skipped_this_update:
            self._consecutive_skips = 0
        buffer = self.rollout_buffer
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_variance(buffer.values.flatten(), buffer.returns.flatten()))
        self.logger.record("train/entropy_loss", entropy_loss)
        self.logger.record("train/policy_loss", policy_loss)
        self.logger.record("train/value_loss", value_loss)
        if kl is not None:
            self.logger.record("train/kl", kl)
        self.logger.record("train/skipped_updates", self.skipped_updates)
        for key, value in logged.items():
            self.logger.record(f"train/{key}", value)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        SB3's ``save``, made atomic for a path: the model is written to a temporary file in the same folder and
        renamed over ``path`` when complete, so an interrupted save (a kill, a full disk) leaves the previous file
        intact. As in SB3, ``.zip`` is appended to a path without a suffix; an open file is written directly. The
        file also holds the states of Python's, NumPy's and PyTorch's random number generators (see :meth:`load`).

        See ``stable_baselines3.common.base_class.BaseAlgorithm.save`` for the arguments.
        """
        # the generators' states go into the file, so that load() can resume exactly (see load)
        self._rng_states = _global_rng_states()
        try:
            self._save_atomically(path, exclude, include)
        finally:
            del self._rng_states

    def _save_atomically(
        self, path: str | pathlib.Path | io.BufferedIOBase, exclude: Iterable[str] | None, include: Iterable[str] | None
    ) -> None:
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude=exclude, include=include)
            return
        target = pathlib.Path(path)
        if target.suffix == "":
            target = target.with_name(target.name + ".zip")
        if target.is_dir():  # SB3's own fallback (it saves beside the folder)
            super().save(path, exclude=exclude, include=include)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial.zip")
        except OSError as exc:  # e.g. a read-only folder: name the model file, not the temporary one
            if exc.errno is None:
                raise OSError(f"cannot write a model file in {target.parent} ({target}): {exc}") from None
            raise type(exc)(exc.errno, f"{exc.strerror}: cannot write a model file in {target.parent}", str(target)) from None
        os.close(handle)
        try:
            super().save(pathlib.Path(temporary), exclude=exclude, include=include)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # what a plain open() would have given, not mkstemp's 0600
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise

    # -- learn / load --------------------------------------------------------------------------------------------

    def learn(
        self: SelfNaturalGradientAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = None,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfNaturalGradientAlgorithm:
        """
        SB3's ``learn``; ``log_interval=None`` is the algorithm's ``default_log_interval`` and ``tb_log_name=None``
        its class name.
        """
        log_interval = self.default_log_interval if log_interval is None else log_interval
        if self.__dict__.pop("_continue_timesteps_once", False):  # set by `sb3-natgrad train -i` (see zoo.experiment)
            reset_num_timesteps = False
        self._start_log_schedule(log_interval)
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=type(self).__name__ if tb_log_name is None else tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfNaturalGradientAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfNaturalGradientAlgorithm:
        """
        Load a saved model of this algorithm (policy, optimizer states and all settings); refuses files saved by
        other algorithms with an error that says so.

        SB3's ``load`` reseeds the global random number generators from the model's ``seed``; here they are then
        set to the states they had when the model was saved. So continuing a run is exact: save at the end of a
        rollout (e.g. in a callback's ``_on_rollout_start``), then ``load(path, env=env, force_reset=False)`` with
        the env in the state it had then, and ``learn(T - N, reset_num_timesteps=False)``: the parameters are
        bit-identical to those of the uninterrupted ``learn(T)`` (tested for the three algorithms on CPU).

        See ``stable_baselines3.common.base_class.BaseAlgorithm.load`` for the arguments.
        """
        check_saved_algorithm(path, cls.__name__, cls.saved_markers)
        model = super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        states = model.__dict__.pop("_rng_states", None)
        if states is not None:
            _set_global_rng_states(states)
        return model
