# ruff: noqa
"""The seed's third pattern: the data agent fabricates metrics when the fetch fails."""

import random


class UnifiedDataAgent:
    async def fetch_metrics(self, metrics, context):
        try:
            return await self.pipeline.query(metrics, context)
        except Exception as e:
            self.logger.warning(f"Data fetch failed, using fallback: {e}")
            # Return mock data for testing
            return self._generate_fallback_data(metrics, 100)  # expect: SIN003

    def _generate_fallback_data(self, metrics, rows):
        # Reported where it is called, not again here.
        return {metric: [random.uniform(0, 1) for _ in range(rows)] for metric in metrics}

    async def fetch_metrics_after(self, metrics, context):
        try:
            return await self.pipeline.query(metrics, context)
        except Exception as e:
            raise UnifiedServiceException(
                message="Data services temporarily unavailable",
                estimated_recovery_time_seconds=120,  # expect: SIN005
            ) from e
