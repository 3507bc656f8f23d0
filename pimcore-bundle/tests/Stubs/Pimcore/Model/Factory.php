<?php

declare(strict_types=1);

namespace Pimcore\Model;

/**
 * Stand-in for Pimcore\Model\Factory (lib/Model/Factory.php at v11.4.1; tests only): builds a model
 * class, or the class a project configured in its place (`pimcore.models.class_overrides`). Pimcore
 * builds every loaded object through it (AbstractObject.php:218), so a project's override of Product is
 * what getById() and listings return; `new Product()` does not see it.
 */
class Factory
{
    private static ?self $instance = null;

    /** @param array<class-string, class-string> $overrides */
    public function __construct(private array $overrides = [])
    {
    }

    public static function instance(): self
    {
        return self::$instance ??= new self();
    }

    /** @internal the stand-in's kernel boot: `pimcore.models.class_overrides` */
    public static function configure(array $overrides): void
    {
        self::$instance = new self($overrides);
    }

    public function build(string $className, array $params = []): object
    {
        $class = $this->overrides[ltrim($className, '\\')] ?? $className;

        return new $class(...$params);
    }

    public function getClassNameFor(string $className): string
    {
        return $this->overrides[ltrim($className, '\\')] ?? $className;
    }
}
