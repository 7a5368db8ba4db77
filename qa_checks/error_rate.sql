-- severity: blocking
-- Per stage, failed + transient rows stay under the recipe's maximum share
-- (release.gate.max_error_rate, or max_error_rate_by_stage).
SELECT s.stage, s.rows, s.errors, round(s.errors / s.rows, 4) AS error_rate, l.max_rate
FROM stage_counts s JOIN error_limits l USING (stage)
WHERE s.rows > 0 AND s.errors / s.rows > l.max_rate
