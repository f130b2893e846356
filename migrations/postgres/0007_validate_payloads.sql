-- A trigger's payload_schema is enforced where events enter unless the trigger says
-- validate_payloads: false.
ALTER TABLE attune."trigger" ADD COLUMN validate_payloads boolean NOT NULL DEFAULT true;
