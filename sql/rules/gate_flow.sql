-- gate_flow: people per minute per metre of width through each gate line, against the Green
-- Guide's exit capacity of 82 persons/min/m on the level (66 on stairs). One row per line and
-- minute with crossings in either direction; `capacity_ratio` is the share of 82. To be alerted
-- only when a gate nears capacity, add `HAVING count(*) / max(width_m) >= 0.8 * 82`.
-- Lines count one camera's tracks each (`camera` in [[lines]]), so nobody is counted twice.
CREATE RULE gate_flow WITH (severity = 'low') AS
SELECT line_id, line, window_start, window_end,
       sum(CASE WHEN direction = 'in' THEN 1 ELSE 0 END) AS crossed_in,
       sum(CASE WHEN direction = 'out' THEN 1 ELSE 0 END) AS crossed_out,
       max(width_m) AS width_m,
       count(*) / max(width_m) AS persons_per_min_per_m,
       count(*) / max(width_m) / 82.0 AS capacity_ratio
FROM line_crossings
GROUP BY tumble(event_time, INTERVAL '1 minute'), line_id, line
