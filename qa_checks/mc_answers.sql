-- severity: blocking
-- A multiple-choice answer_index points at one of the question's options.
WITH mc AS (
    SELECT annotation_id, clip_id, split,
           unnest(from_json(json_extract(output, '$.multiple_choice'),
                            '[{"question": "VARCHAR", "options": ["VARCHAR"], "answer_index": "BIGINT"}]')) AS q
    FROM annotations
    WHERE task = 'qa'
)
SELECT annotation_id, clip_id, split, q.question AS question, q.answer_index AS answer_index,
       len(q.options) AS n_options
FROM mc
WHERE q.answer_index IS NULL OR q.options IS NULL OR q.answer_index < 0 OR q.answer_index >= len(q.options)
