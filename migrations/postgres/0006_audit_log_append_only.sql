-- The audit log is a record of what happened: rows are added, never changed or removed, not
-- even by the gateway's own connection. (Removing old rows, if ever wanted, is an explicit
-- migration that drops this trigger first.)
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: rows are never updated or deleted';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
