"""Which updates of an on-policy ``learn()`` have their recorded values written to the log."""

from __future__ import annotations


class LogScheduleMixin:
    """
    For ``OnPolicyAlgorithm`` subclasses whose ``train()`` computes diagnostics that are worth their cost only when
    they reach the log (an exact KL, an estimator variance). The subclass's ``learn`` calls :meth:`_start_log_schedule`
    and its ``train`` increments ``_iterations_in_learn`` once per update.
    """

    num_timesteps: int
    _total_timesteps: int
    _log_interval: int | None = None
    _iterations_in_learn: int = 0

    def _start_log_schedule(self, log_interval: int) -> None:
        self._log_interval = log_interval
        self._iterations_in_learn = 0

    def _logs_written_after_this_update(self) -> bool:
        """
        Whether the values recorded by this update reach the log: ``learn`` dumps every ``log_interval`` iterations,
        before that iteration's update, so the update of iteration ``i`` is logged when ``(i + 1) % log_interval == 0``
        (or on the last iteration, for ``logger.name_to_value`` readers).
        """
        log_interval = self._log_interval
        if log_interval is None or log_interval <= 0:
            return True
        last = self.num_timesteps >= self._total_timesteps
        return last or (self._iterations_in_learn + 1) % log_interval == 0
