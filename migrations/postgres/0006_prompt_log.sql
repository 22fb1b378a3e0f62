-- Prompt logging, off by default ([database] log_prompts): when an operator turns it on, each
-- request's messages (the JSON array as sent) and the answer's text are kept here, one row per
-- generation, written in the same transaction as the generation.
CREATE TABLE generation_contents (
    generation_id TEXT PRIMARY KEY,  -- generations.id
    prompt        TEXT NOT NULL,
    completion    TEXT
);
