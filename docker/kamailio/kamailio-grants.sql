-- What Kamailio (kamailio-production.cfg) may do in the hotline's database, and nothing more:
-- read the accounts view (HA1 hashes of current staff only; not the staff table) and keep its
-- registrations. Run as the database owner after `hotline migrate`, once the role exists:
--   CREATE ROLE kamailio LOGIN;   -- its password in Kamailio's ~/.pgpass, not in DBURL
--   psql -d hotline -f kamailio-grants.sql
GRANT SELECT ON sip_subscribers, version TO kamailio;
GRANT SELECT, INSERT, UPDATE, DELETE ON location TO kamailio;
GRANT USAGE ON SEQUENCE location_id_seq TO kamailio;
