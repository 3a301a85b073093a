-- The birth date in clear plus the masked ID number's last four rebuilt the ID number (district
-- code + birth date + the shown tail, then the check digit: one candidate; issue 9 §5). The birth
-- date is part of the ID number, which is stored encrypted: it is read from there (audited) when
-- needed, and is no longer a column. The mask keeps the first four digits (province and city,
-- known from the district anyway) and the check character only: docs/privacy.md says why.
ALTER TABLE residents DROP COLUMN birth_date;
UPDATE residents
   SET id_number_masked = left(id_number_masked, 4) || repeat('*', length(id_number_masked) - 5)
                          || right(id_number_masked, 1)
 WHERE length(id_number_masked) >= 15;
