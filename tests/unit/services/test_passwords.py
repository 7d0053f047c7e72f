from messenger.services.passwords import Passwords


async def test_hash_then_verify_accepts_only_the_password() -> None:
    passwords = Passwords(time_cost=1, memory_cost=8 * 1024)
    try:
        stored = await passwords.hash("correct horse")
        assert stored.startswith("$argon2id$")
        assert await passwords.verify(stored, "correct horse")
        assert not await passwords.verify(stored, "wrong horse")
        assert not await passwords.verify("not a hash", "correct horse")
    finally:
        passwords.close()


async def test_verifying_without_a_hash_is_false_even_for_the_decoy() -> None:
    passwords = Passwords(time_cost=1, memory_cost=8 * 1024)
    try:
        assert not await passwords.verify(None, "decoy password, never valid")
    finally:
        passwords.close()
