-- The audit log is a record of what happened: rows are added, never changed or removed, not
-- even by the gateway's own connection. Same meaning as PostgreSQL's 0006.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows are never updated or deleted');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: rows are never updated or deleted');
END;
