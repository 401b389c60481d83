# ruff: noqa
"""Failure paths that return what a generator of invented output produced."""

from unittest.mock import MagicMock


class Agent:
    def respond(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return self._mock_response(prompt)  # expect: SIN003

    async def respond_async(self, prompt):
        try:
            return await self.llm(prompt)
        except Exception:
            return await self.fake_completion(prompt)  # expect: SIN003

    def dummy(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return get_dummy_answer()  # expect: SIN003

    def placeholder(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return make_placeholder_reply(prompt)  # expect: SIN003

    def synthetic(self, query):
        try:
            return self.db.run(query)
        except Exception:
            return SyntheticDataset(rows=100)  # expect: SIN003

    def canned(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return canned_reply_for(prompt)  # expect: SIN003

    def sample_data(self, query):
        try:
            return self.db.run(query)
        except Exception:
            return generate_sample_data(query)  # expect: SIN003

    def camel_case(self, query):
        try:
            return self.db.run(query)
        except Exception:
            return self.generateFallbackData(query)  # expect: SIN003

    def fallback_response(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return self.get_fallback_response(prompt)  # expect: SIN003

    def assigned_then_returned(self, query):
        try:
            metrics = self.db.metrics(query)
        except Exception:
            metrics = self._fallback_metrics(query)
        return metrics  # expect: SIN003

    def magic_mock(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return MagicMock(text="ok")  # expect: SIN003

    def fake_stream_without_a_real_response(self, prompt):
        try:
            yield from self.llm.stream(prompt)
        except Exception:
            yield from self._fake_stream_chunks()  # expect: SIN003

    def inside_an_answer(self, prompt):
        try:
            return self.llm(prompt)
        except Exception:
            return {
                "model": "backup",
                "content": self._mock_completion_text(prompt),  # expect: SIN003
            }
