-- 006: how much of each prompt the LLM server reused from its prompt cache (OpenAI's
-- usage.prompt_tokens_details.cached_tokens, llama.cpp's timings.cache_n), per step and per run.
ALTER TABLE runs ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_steps ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
