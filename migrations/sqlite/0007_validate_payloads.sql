-- A trigger's payload_schema is enforced where events enter unless the trigger says
-- validate_payloads: false.
ALTER TABLE "trigger" ADD COLUMN validate_payloads INTEGER NOT NULL DEFAULT 1;
