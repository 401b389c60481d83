# ruff: noqa
"""The seed's first pattern: ModelCascade answers with an apology on any failure."""

import logging
import time

logger = logging.getLogger(__name__)


class ModelCascade:
    async def execute(self, query, context):
        try:
            return await self._cascade(query, context)
        except Exception as e:
            logger.error(f"Cascade execution failed: {e}")
            return {
                "response": "I apologize, but I encountered an error processing your request.",  # expect: SIN002
                "model_selected": "fallback",
                "quality_score": 0.0,
            }

    async def execute_after(self, query, context):
        """The seed's own remediation still hard-codes a quality score and a recovery time."""
        start_time = time.time()
        try:
            return await self._cascade(query, context)
        except Exception as e:
            available_models = await self._get_available_models()
            if available_models:
                try:
                    simple_response = await self.llm_manager.generate_response(
                        prompt=query, model_name=available_models[0]
                    )
                    return {
                        "response": simple_response,
                        "model_selected": available_models[0],
                        "quality_score": 0.7,  # expect: SIN005
                        "latency_ms": (time.time() - start_time) * 1000,
                        "cache_hit": False,
                    }
                except Exception as inner_e:
                    logger.error(f"Direct model call also failed: {inner_e}")
            raise UnifiedServiceException(
                message=f"LLM services temporarily unavailable: {e}",
                should_retry=True,
                estimated_recovery_time_seconds=30,  # expect: SIN005
            )
