// Faults take minutes (a frozen leader waits out its lease): give each test room.
jest.setTimeout(1_200_000);
