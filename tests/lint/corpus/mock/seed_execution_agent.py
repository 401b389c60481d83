# ruff: noqa
"""The seed's second pattern: the execution agent claims completion with a template."""

import logging

logger = logging.getLogger(__name__)


class EnhancedExecutionAgent:
    async def process(self, context):
        try:
            return await self.llm.generate(context.metadata["user_request"])
        except Exception as e:
            logger.error(f"LLM processing failed for user {context.user_id}: {e}")
            user_prompt = context.metadata.get("user_request", "request")
            return f"Processing completed with fallback response for: {str(user_prompt)}"  # expect: SIN001

    async def process_after(self, context):
        """The seed's remediation raises, but with invented recovery estimates."""
        try:
            return await self.llm.generate(context.metadata["user_request"])
        except Exception as e:
            alternative_result = await self._attempt_alternative_processing(context)
            if alternative_result:
                return alternative_result
            raise UnifiedServiceException(
                message="LLM processing temporarily unavailable",
                should_retry=True,
                estimated_recovery_time_seconds=60,  # expect: SIN005
            ) from e
