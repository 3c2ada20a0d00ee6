-- The sprint goods. ON CONFLICT keeps operator edits to existing rows.
INSERT INTO rewards (sku, name, description, cost) VALUES
    ('coffee', 'Coffee', 'A proper cup of coffee for the sprint', 20),
    ('pop-tarts', 'Pop-Tarts', 'A box of Pop-Tarts for the team', 30),
    ('dogecoin', 'Dogecoin', 'One Dogecoin, such reward, very sprint', 100)
ON CONFLICT (sku) DO NOTHING;
