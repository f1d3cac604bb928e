"""
rl-zoo3's ``ExperimentManager`` with the packaged hyperparameter files as default and clear input errors.

``sb3-natgrad train`` puts :class:`NatgradExperimentManager` in place of ``rl_zoo3.train.ExperimentManager`` while
rl-zoo3's own ``train()`` runs, so everything else (flags, preprocessing, wrappers, callbacks, Optuna, output
layout) is rl-zoo3's.
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import os
import shutil
import signal
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER
from rl_zoo3.utils import ALGOS
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from sb3_natgrad.common.minatar import ensure_registered
from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm
from sb3_natgrad.zoo import DEBUG_ENV_VAR, ZOO_ALGORITHMS, ZooError, default_config
from sb3_natgrad.zoo.config import check_entry, load_yaml_config, one_line, select_entry

_SIGNATURE = inspect.signature(ExperimentManager.__init__)

#: Set this environment variable to get the full traceback instead of the one-line error for setup failures.

# What a bad configuration raises while rl-zoo3 builds the envs and the model: invalid values (ValueError,
# AssertionError), wrong types or arguments (TypeError, KeyError), strings that rl-zoo3 evaluates as Python
# (policy_kwargs, normalize: NameError, SyntaxError), dotted class paths (ImportError, AttributeError) and env errors.
_SETUP_ERRORS = (
    ValueError,
    TypeError,
    AssertionError,
    KeyError,
    NameError,
    SyntaxError,
    ImportError,
    AttributeError,
    gym.error.Error,
)


class TrainingInterrupted(ZooError):
    """Training was interrupted (SIGINT) and the model saved; the message says how to continue."""

    exit_code = 130


class StopOnInterrupt(BaseCallback):
    """
    Ctrl-C (SIGINT) ends training at the next env step instead of wherever Python happens to be: never in the middle of
    an update (a K-FAC step that has moved some layers and not others), a decomposition or a save. SB3 then leaves the
    unfinished rollout untrained, so the saved model holds the weights and optimizer state of the last whole update.
    A second Ctrl-C interrupts at once (``KeyboardInterrupt``), for a run that does not reach its next env step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def _on_step(self) -> bool:
        return not self.interrupted

    def _handle(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT in this context (in the main thread only; elsewhere signals are left alone)."""
        try:
            previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            # None: the previous handler was not installed from Python; the default is the closest to it
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


#: ``-optimize`` objectives: rl-zoo3's last evaluation, or the training curve (``--optimization-objective``)
OPTIMIZATION_OBJECTIVES = ("eval", "training")


class TrainingCurve(BaseCallback):
    """
    Records SB3's training mean (the last 100 finished episodes, ``rollout/ep_rew_mean``) at the end of every rollout;
    at the end of training, :attr:`finished` holds under ``key`` the mean of these values: the area under the training
    curve per rollout, what ``--optimization-objective training`` maximises (``-inf`` if no episode finished).

    :param key: where the result goes in :attr:`finished`
    """

    #: results by key (the trial that created the callback takes its own)
    finished: ClassVar[dict[str, float]] = {}

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.curve: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        episodes = self.model.ep_info_buffer
        if episodes:
            self.curve.append(float(np.mean([episode["r"] for episode in episodes])))

    def _on_training_end(self) -> None:
        TrainingCurve.finished[self.key] = float(np.mean(self.curve)) if self.curve else float("-inf")


class NatgradExperimentManager(ExperimentManager):
    """
    ``rl_zoo3.exp_manager.ExperimentManager`` with three changes:

    - for an sb3_natgrad algorithm, the default config is the packaged ``sb3_natgrad/hyperparams/<algo>.yml``
      (recorded as ``conf_file`` in ``args.yml``) instead of ``rl_zoo3/hyperparams/<algo>.yml``;
    - the hyperparameters are checked before anything is built: a malformed file, a missing entry, an unknown key
      (neither a constructor argument nor an rl-zoo3 key) or a number that YAML reads as a string raise a
      :class:`~sb3_natgrad.zoo.ZooError` naming the problem; so do errors while creating the envs and the model;
    - ``--trial-id 0`` loads trial 0 (rl-zoo3 2.9 tests ``if trial_id:`` and silently ignores it);
    - ``-i`` (continue training) continues ``num_timesteps`` for the sb3_natgrad algorithms: with ``-n`` the steps
      still to go, the learning-rate schedules continue where the saved run stopped;
    - Ctrl-C (SIGINT) during training ends it at the next env step (:class:`StopOnInterrupt`, never inside an
      update), saves the model as rl-zoo3 does, and then ends with :class:`TrainingInterrupted` (exit code 130) saying
      where the model is and how to continue, instead of exit code 0 and no word.

    Same constructor arguments as ``ExperimentManager``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        arguments = _SIGNATURE.bind(None, *args, **kwargs).arguments
        ensure_registered(arguments.get("env_id"))  # MinAtar ids, through the package's own entry point
        super().__init__(*args, **kwargs)
        if arguments.get("config") is None and self.algo in {entry.name for entry in ZOO_ALGORITHMS}:
            packaged = default_config(self.algo)
            if packaged is not None:
                self.config = packaged
                if hasattr(self.args, "conf_file"):
                    self.args.conf_file = packaged

    #: what ``-optimize`` maximises (one of :data:`OPTIMIZATION_OBJECTIVES`; ``sb3-natgrad train --optimization-objective``)
    optimization_objective: str = "eval"

    #: runs per trial, averaged (``sb3-natgrad train --trial-repeats``; only with the ``"training"`` objective)
    trial_repeats: int = 1

    def objective(self, trial: Any) -> float:
        """
        rl-zoo3's objective (the last evaluation's mean return; its evaluations also drive the pruner), or with
        ``optimization_objective = "training"`` the area under the training curve of the same run
        (:class:`TrainingCurve`): what a user of the trained agent's learning curve sees, not one deterministic
        evaluation at the end. With ``trial_repeats = N`` the trial's hyperparameters train ``N`` models (rl-zoo3 does
        not seed a trial's model, so each run draws its own initialisation and actions) and the value is the mean of
        their areas, each recorded in the trial's user attribute ``training_areas``: one run of a classic-control task
        is too noisy to rank trials by.
        """
        if self.optimization_objective == "eval":
            return super().objective(trial)
        saved = self.specified_callbacks
        listed = saved if isinstance(saved, list) else ([saved] if saved else [])
        areas: list[float] = []
        for run in range(self.trial_repeats):
            key = f"{id(self)}:{trial.number}:{run}"
            self.specified_callbacks = [*listed, {f"{__name__}.TrainingCurve": {"key": key}}]
            try:
                super().objective(trial)
            finally:
                self.specified_callbacks = saved
                areas.append(TrainingCurve.finished.pop(key, float("-inf")))
        if self.trial_repeats > 1:
            trial.set_user_attr("training_areas", areas)
        return float(np.mean(areas))

    #: ``num_timesteps`` when SIGINT interrupted ``learn`` (``None``: not interrupted)
    interrupted_at: int | None = None
    #: ``num_timesteps`` when ``learn`` started (a continued sb3_natgrad run starts at its saved count)
    started_at: int = 0

    def learn(self, model: BaseAlgorithm) -> None:
        """
        rl-zoo3's ``learn``, with Ctrl-C ending training at the next env step (see :class:`StopOnInterrupt`).

        :param model: the model to train
        """
        if self.continue_training and isinstance(model, NaturalGradientAlgorithm):
            # rl-zoo3 restarts num_timesteps at 0 with -i: continue the count (and with it the schedules' progress,
            # checkpoint names and logs); popped by the model's learn() before anything is saved
            model._continue_timesteps_once = True  # type: ignore[attr-defined]
            self.started_at = model.num_timesteps
        stop = StopOnInterrupt()
        self.callbacks.append(stop)
        try:
            with stop.installed():
                super().learn(model)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            # A terminal's Ctrl-C also reaches SubprocVecEnv's workers, which die: the next step (or close) of the
            # envs fails. The model itself is consistent (the last update was whole): save it as for Ctrl-C.
            if not stop.interrupted:
                raise
        finally:
            self.callbacks.remove(stop)
            if stop.interrupted:
                self.interrupted_at = model.num_timesteps

    def save_trained_model(self, model: BaseAlgorithm) -> None:
        """
        rl-zoo3's ``save_trained_model``; after an interruption, then :class:`TrainingInterrupted`.

        :param model: the model to save
        """
        super().save_trained_model(model)
        if self.interrupted_at is not None:
            path = os.path.join(self.save_path, f"{self.env_name}.zip")
            remaining = self.n_timesteps - (self.interrupted_at - self.started_at)
            raise TrainingInterrupted(
                f"interrupted at {self.interrupted_at} steps ({self.interrupted_at - self.started_at} of this run's "
                f"{self.n_timesteps}); the model was saved to {path}; continue with: sb3-natgrad train --algo {self.algo} "
                f"--env {self.env_name.gym_id} -i {path} -n {max(remaining, 1)}"
            )

    def hyperparameters_optimization(self) -> None:
        """
        rl-zoo3's ``hyperparameters_optimization``, after creating a new SQLite storage (and the study) once, under a
        file lock: workers that start together on a new ``sqlite:///`` file otherwise race to create its tables and
        one of them dies of an ``IntegrityError``.
        """
        if isinstance(self.storage, str) and self.storage.startswith("sqlite:///"):
            self._create_sqlite_study_once(self.storage)
        super().hyperparameters_optimization()

    def _create_sqlite_study_once(self, url: str) -> None:
        import optuna

        path = url[len("sqlite:///") :]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(f"{path}.lock", "w") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            except ImportError:  # pragma: no cover - not POSIX: no lock, as before
                pass
            storage = optuna.storages.RDBStorage(url)
            if self.study_name is not None:
                optuna.create_study(storage=storage, study_name=self.study_name, load_if_exists=True, direction="maximize")

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """
        rl-zoo3's ``read_hyperparameters`` after checking the file, followed by a check of the chosen entry.

        :return: the hyperparameters and the sorted copy that is saved to ``config.yml``
        """
        where = os.path.basename(self.config)
        if self.config.endswith((".yml", ".yaml")):
            table = load_yaml_config(self.config)
            where = f"{where} [{select_entry(table, self.env_name.gym_id, self._is_atari, self.config)}]"
        elif self.config.endswith(".py") and not os.path.isfile(self.config):
            raise ZooError(f"hyperparameter file not found: {self.config}")

        hyperparams, saved_hyperparams = super().read_hyperparameters()

        if self.storage and self.study_name and self.trial_id == 0:
            print("Loading from Optuna study...")
            hyperparams.update(self.load_trial(self.storage, self.study_name, self.trial_id))
            if self.custom_hyperparams is not None:
                hyperparams.update(self.custom_hyperparams)
            saved_hyperparams = OrderedDict([(key, hyperparams[key]) for key in sorted(hyperparams.keys())])

        check_entry(ALGOS[self.algo], hyperparams, where, overrides=self.custom_hyperparams)
        return hyperparams, saved_hyperparams

    def load_trial(self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True) -> dict[str, Any]:
        """
        rl-zoo3's ``load_trial`` with clear errors for a missing study or trial.

        :param storage: Optuna storage (a ``.log`` journal file or a database URL)
        :param study_name: the study
        :param trial_id: trial number (``None``: the best trial)
        :param convert: convert the raw trial parameters to hyperparameters
        :return: the hyperparameters of the trial
        """
        if convert and self.algo not in HYPERPARAMS_CONVERTER:
            raise ZooError(f"--algo {self.algo} has no Optuna converter, cannot load trials")
        try:
            return super().load_trial(storage, study_name, trial_id, convert)
        except KeyError as exc:
            raise ZooError(f"cannot load trial {trial_id} of study {study_name!r} from {storage}: {one_line(exc)}") from None
        except IndexError:
            raise ZooError(f"study {study_name!r} in {storage} has no trial {trial_id}") from None
        except ValueError as exc:
            raise ZooError(f"cannot load study {study_name!r} from {storage}: {one_line(exc)}") from None

    def _remove_failed_run_folder(self, fresh: bool) -> None:
        """
        Remove the run folder this run created if it holds no model: a later ``enjoy`` (which takes the newest run)
        would otherwise pick the empty folder and fail on it.
        """
        models = glob.glob(os.path.join(self.save_path, "**", "*.zip"), recursive=True)
        if fresh and os.path.isdir(self.save_path) and not models:
            shutil.rmtree(self.save_path, ignore_errors=True)

    def setup_experiment(self) -> tuple[BaseAlgorithm, dict[str, Any]] | None:
        """
        rl-zoo3's ``setup_experiment``; input errors while creating the envs and the model become one-line
        :class:`~sb3_natgrad.zoo.ZooError` (set ``SB3_NATGRAD_DEBUG=1`` for the traceback).

        :return: the model and the saved hyperparameters, or ``None`` when optimizing hyperparameters
        """
        fresh = not os.path.exists(self.save_path)
        try:
            return super().setup_experiment()
        except ZooError:
            self._remove_failed_run_folder(fresh)
            raise
        except _SETUP_ERRORS as exc:
            self._remove_failed_run_folder(fresh)
            if os.environ.get(DEBUG_ENV_VAR):
                raise
            raise ZooError(
                f"cannot set up {self.algo} on {self.env_name.gym_id} with {self.config}: "
                f"{type(exc).__name__}: {one_line(exc)} (set {DEBUG_ENV_VAR}=1 for the traceback)"
            ) from exc
